-- set_draining.lua: a drained worker finishes what it holds and is handed
-- no more jobs (lease.lua checks the set); undraining lets it lease again.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 worker id, 3 "1" drain | "0" undrain
-- Returns: {"ok", "1" | "0"} (the resulting state)
local set = P .. ':draining'
if ARGV[3] == '1' then
  redis.call('SADD', set, ARGV[2])
else
  redis.call('SREM', set, ARGV[2])
end
redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"draining"}')
return {'ok', tostring(redis.call('SISMEMBER', set, ARGV[2]))}
