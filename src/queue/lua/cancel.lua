-- cancel.lua: cancel one job on behalf of its owner or an admin.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 actor (a participant name, or "@admin"),
--       4 history limit
-- Returns: {"ok", "cancelled"} (was queued: removed at once)
--        | {"ok", "flagged"} (leased/running: its worker sees the flag on its
--          next heartbeat and interrupts ComfyUI)
--        | {"err", code, message}, code: not_found (also for another
--          participant's job), already_finished
local id, actor = ARGV[2], ARGV[3]
local jk = k('job', id)
local f = redis.call('HMGET', jk, 'participant', 'status')
if not f[1] or (actor ~= '@admin' and actor ~= f[1]) then
  return err('not_found', 'no such job')
end
local u, status = f[1], f[2]
if status == 'queued' then
  unqueue(u, id)
  finish_job(u, id, 'cancelled', now_ms(), tonumber(ARGV[4]))
  return {'ok', 'cancelled'}
elseif status == 'leased' or status == 'running' then
  redis.call('HSET', jk, 'cancel', '1')
  publish(u, id, 'cancelling')
  return {'ok', 'flagged'}
end
return err('already_finished', 'the job has already finished as ' .. status)
