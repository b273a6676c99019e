-- set_participant.lua: change one per-participant setting (lock, weight,
-- max pending jobs), or the global default of max pending jobs.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 participant (or "@all" for the global max_pending),
--       3 field: locked | weight | max_pending, 4 value ("" removes the override)
-- Returns: {"ok"} | {"err", "invalid", message}
local u, field, value = ARGV[2], ARGV[3], ARGV[4]
if field ~= 'locked' and field ~= 'weight' and field ~= 'max_pending' then
  return err('invalid', 'unknown participant setting ' .. field)
end
if value ~= '' and not tonumber(value) then return err('invalid', field .. ' must be a number') end
local key = k('user', u)
if u == '@all' then
  if field ~= 'max_pending' then return err('invalid', 'only max_pending has a global default') end
  key = K_SETTINGS
else
  redis.call('SADD', K_USERS, u)
end
if value == '' then redis.call('HDEL', key, field) else redis.call('HSET', key, field, value) end
redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"participant","participant":"' .. u .. '"}')
return {'ok'}
