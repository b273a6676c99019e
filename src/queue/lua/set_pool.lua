-- set_pool.lua: a pool's state (enabled | parked | draining), burst
-- policy (always | line_over:N) and most jobs held at once, read by
-- lease.lua for every worker of the pool (<p>:workerpool); kept across
-- restarts.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 pool name, 3 "init" (state and burst only where not
--       set yet: the config's values at hub start) | "set" (the
--       instructor's change), 4 state ("" leaves it), 5 burst policy (""
--       leaves it), 6 max concurrency ("" leaves it; 0: no limit; the
--       config's, so written at init too)
-- Returns: {"ok", state, burst}
local pk = k('pool', ARGV[2])
local function put(field, v)
  if v == '' then return end
  if ARGV[3] == 'init' then
    redis.call('HSETNX', pk, field, v)
  else
    redis.call('HSET', pk, field, v)
  end
end
local state, burst = ARGV[4], ARGV[5]
if state ~= '' and state ~= 'enabled' and state ~= 'parked' and state ~= 'draining' then
  return err('invalid', 'unknown pool state ' .. state)
end
if burst ~= '' and burst ~= 'always' and not string.match(burst, '^line_over:%d+$') then
  return err('invalid', 'unknown burst policy ' .. burst)
end
put('state', state)
put('burst', burst)
if ARGV[6] and ARGV[6] ~= '' then
  if not string.match(ARGV[6], '^%d+$') then return err('invalid', 'max concurrency ' .. ARGV[6]) end
  redis.call('HSET', pk, 'max', ARGV[6])
end
if ARGV[3] ~= 'init' then
  redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"pool","pool":"' .. ARGV[2] .. '"}')
end
local now = redis.call('HMGET', pk, 'state', 'burst')
return {'ok', now[1] or 'enabled', now[2] or 'always'}
