-- move.lua: move a queued job one place up or down in the global order by
-- swapping places with its neighbour (in the priority lane, or in the
-- arrival order that also orders each participant's own line).
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 direction: up | down
-- Returns: {"ok", "1"} moved | {"ok", "0"} already at that end
--        | {"err", code, message}, code: not_found, not_queued, invalid
local id, dir = ARGV[2], ARGV[3]
if dir ~= 'up' and dir ~= 'down' then return err('invalid', 'direction must be up or down') end
local jk = k('job', id)
local f = redis.call('HMGET', jk, 'participant', 'status', 'priority')
if not f[1] then return err('not_found', 'no such job') end
if f[2] ~= 'queued' then return err('not_queued', 'only a waiting job can be moved; it is ' .. f[2]) end
local z = K_QUEUED
if f[3] == '1' then z = K_PRIO end
local rank = redis.call('ZRANK', z, id)
local other_rank = rank - 1
if dir == 'down' then other_rank = rank + 1 end
if other_rank < 0 then return {'ok', '0'} end
local other = redis.call('ZRANGE', z, other_rank, other_rank, 'WITHSCORES')
if not other[1] then return {'ok', '0'} end
local mine = redis.call('ZSCORE', z, id)
local theirs = other[2]
redis.call('ZADD', z, theirs, id, mine, other[1])
if z == K_QUEUED then
  local ou = redis.call('HGET', k('job', other[1]), 'participant')
  redis.call('ZADD', k('line', f[1]), theirs, id)
  redis.call('ZADD', k('line', ou), mine, other[1])
  redis.call('HSET', jk, 'order', theirs)
  redis.call('HSET', k('job', other[1]), 'order', mine)
  publish(ou, other[1], 'queued')
end
publish(f[1], id, 'queued')
return {'ok', '1'}
