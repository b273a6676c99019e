-- register_caps.lua: record what a worker can run (node types, model files),
-- replacing what it advertised before; lease.lua matches jobs' requirements
-- against it, enqueue.lua refuses a job no worker seen recently could run.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 worker id, 3 catalogue description (JSON, kept in
--       <p>:known for the editors' merged catalogue), 4.. capability tags
-- Returns: {"ok", number of tags}
local w = ARGV[2]
local ck = k('caps', w)
redis.call('DEL', ck)
for i = 4, #ARGV, 500 do
  redis.call('SADD', ck, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('HSET', P .. ':known', w, ARGV[3])
redis.call('ZADD', P .. ':seen', now_ms(), w)
return {'ok', tostring(#ARGV - 3)}
