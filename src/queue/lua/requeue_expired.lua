-- requeue_expired.lua: the reaper; jobs whose lease deadline passed go back
-- to the front of their participant's line (attempts + 1), or fail once the
-- attempt limit is reached, or end as cancelled when a cancel was pending.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 clock offset ms (0 in production; tests pass a large
--       value to expire every lease now), 3 max attempts, 4 batch size,
--       5 history limit
-- Returns: flat list {id1, outcome1, id2, outcome2, ...}, outcome one of
--          requeued | failed | cancelled
local now = now_ms()
local max_attempts = tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now + tonumber(ARGV[2]),
  'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('HINCRBY', K_STATS, 'expired', 1)
  local w = redis.call('HGET', k('job', id), 'worker')
  out[#out + 1] = id
  out[#out + 1] = requeue_job(id, now, max_attempts, tonumber(ARGV[5]),
    'the worker running this job (' .. tostring(w) .. ') stopped responding')
end
return out
