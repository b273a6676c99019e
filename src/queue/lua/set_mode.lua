-- set_mode.lua: switch the scheduling policy; effective on the next lease.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 mode: fifo | round_robin | fair_share
-- Returns: {"ok"} | {"err", "invalid", message}
local mode = ARGV[2]
if mode ~= 'fifo' and mode ~= 'round_robin' and mode ~= 'fair_share' then
  return err('invalid', 'unknown mode ' .. mode .. '; use fifo, round_robin or fair_share')
end
redis.call('HSET', K_SETTINGS, 'mode', mode)
redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"mode","value":"' .. mode .. '"}')
return {'ok'}
