-- clear_queue.lua: cancel every waiting job of one participant (running jobs
-- are left alone; cancel those one by one).
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 participant, 3 history limit
-- Returns: {"ok", number of jobs cancelled}
local u = ARGV[2]
local now = now_ms()
local ids = redis.call('ZRANGE', k('line', u), 0, -1)
for _, id in ipairs(redis.call('ZRANGE', K_PRIO, 0, -1)) do
  if redis.call('HGET', k('job', id), 'participant') == u then ids[#ids + 1] = id end
end
for _, id in ipairs(ids) do
  unqueue(u, id)
  finish_job(u, id, 'cancelled', now, tonumber(ARGV[3]))
end
return {'ok', tostring(#ids)}
