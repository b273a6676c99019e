-- register_caps.lua: record what a worker can run (node types, model files),
-- replacing what it advertised before; lease.lua matches jobs' requirements
-- against it.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 worker id, 3.. capability tags
-- Returns: {"ok", number of tags}
local ck = k('caps', ARGV[2])
redis.call('DEL', ck)
for i = 3, #ARGV, 500 do
  redis.call('SADD', ck, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
return {'ok', tostring(#ARGV - 2)}
