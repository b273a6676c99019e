-- broadcast.lua: the instructor's message to every participant's editor.
-- Kept as the latest broadcast (a page opened later still shows it) and
-- published on the all-participants channel.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 the broadcast as JSON ({id, message, at_ms})
-- Returns: {"ok"}
redis.call('HSET', K_SETTINGS, 'broadcast', ARGV[2])
redis.call('PUBLISH', k('ev', '@all'), '{"broadcast":' .. ARGV[2] .. '}')
return {'ok'}
