-- set_affinity.lua: switch model affinity (warm models first) on or off;
-- effective on the next lease, kept across restarts.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 "1" (on) | "0" (off)
-- Returns: {"ok"}
local on = ARGV[2]
if on ~= '1' then on = '0' end
redis.call('HSET', K_SETTINGS, 'affinity', on)
redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"affinity","value":"' .. on .. '"}')
return {'ok'}
