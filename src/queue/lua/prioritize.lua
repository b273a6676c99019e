-- prioritize.lua: bump a queued job into the priority lane (runs next).
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id
-- Returns: {"ok"} | {"err", code, message}, code: not_found, not_queued
local id = ARGV[2]
local jk = k('job', id)
local f = redis.call('HMGET', jk, 'participant', 'status', 'priority')
if not f[1] then return err('not_found', 'no such job') end
if f[2] ~= 'queued' then return err('not_queued', 'only a waiting job can be prioritized; it is ' .. f[2]) end
if f[3] ~= '1' then
  remove_from_line(f[1], id)
  redis.call('ZADD', K_PRIO, redis.call('HINCRBY', K_SETTINGS, 'prio_seq', 1), id)
  redis.call('HSET', jk, 'priority', '1')
  publish(f[1], id, 'queued')
end
return {'ok'}
