-- pause.lua: pause or resume taking new jobs and/or handing jobs to workers.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 paused_submit ("1", "0", or "" to leave as is),
--       3 paused_dispatch (likewise)
-- Returns: {"ok", paused_submit, paused_dispatch} (the resulting flags)
local function set(field, v)
  if v == '1' or v == '0' then redis.call('HSET', K_SETTINGS, field, v) end
end
set('paused_submit', ARGV[2])
set('paused_dispatch', ARGV[3])
local s = redis.call('HMGET', K_SETTINGS, 'paused_submit', 'paused_dispatch')
redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"paused"}')
return {'ok', s[1] or '0', s[2] or '0'}
