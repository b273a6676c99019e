-- start.lua: a worker reports that a leased job now runs on its ComfyUI.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 fencing token
-- Returns: {"ok", cancel flag "0"/"1"}
--        | {"err", code, message}, code: not_found, stale_token, already_finished
local id = ARGV[2]
local u, status = check_lease(id, ARGV[3])
if not u then return status end
local jk = k('job', id)
if status == 'leased' then
  redis.call('HSET', jk, 'status', 'running', 'started', now_ms())
  publish(u, id, 'running')
end
return {'ok', redis.call('HGET', jk, 'cancel') or '0'}
