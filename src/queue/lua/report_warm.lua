-- report_warm.lua: what a worker's agent says its ComfyUI holds loaded,
-- replacing lease.lua's prediction unless that prediction is newer.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 worker id, 3 as_of (the fencing token of the last job
--       the agent ran to its end; 0: none since it started), 4.. model-file
--       tags
-- Returns: {"ok"} | {"stale"} when a job leased after `as_of` already
--          predicts what will be loaded (its own report comes later)
local w, as_of = ARGV[2], tonumber(ARGV[3])
local have = tonumber(redis.call('HGET', P .. ':warmtok', w) or '0')
if as_of < have then return {'stale'} end
local wk = k('warm', w)
redis.call('DEL', wk)
for i = 4, #ARGV, 500 do
  redis.call('SADD', wk, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('HSET', P .. ':warmtok', w, as_of)
return {'ok'}
