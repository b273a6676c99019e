-- set_login.lua: replace a participant's password and token (the
-- instructor reset them). Frontends prefer this over the credentials file
-- and pick it up within seconds; their old sessions end with it.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 participant, 3 password, 4 token
-- Returns: {"ok"}
redis.call('HSET', k('login', ARGV[2]), 'password', ARGV[3], 'token', ARGV[4])
redis.call('PUBLISH', k('ev', '@admin'), '{"settings":"login"}')
return {'ok'}
