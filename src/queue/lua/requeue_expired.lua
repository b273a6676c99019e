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
  local jk = k('job', id)
  local f = redis.call('HMGET', jk, 'participant', 'cancel', 'worker', 'priority', 'order', 'charge')
  local u = f[1]
  local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('HINCRBY', K_STATS, 'expired', 1)
  local outcome
  if f[2] == '1' then
    outcome = 'cancelled'
    finish_job(u, id, outcome, now, tonumber(ARGV[5]))
  elseif attempts >= max_attempts then
    outcome = 'failed'
    redis.call('HSET', jk, 'error', cjson.encode({
      type = 'lease_expired',
      message = 'the worker running this job (' .. tostring(f[3]) .. ') stopped responding; gave up after '
        .. attempts .. ' attempts',
      details = ''}))
    finish_job(u, id, outcome, now, tonumber(ARGV[5]))
  else
    outcome = 'requeued'
    redis.call('HINCRBY', K_STATS, 'retried', 1)
    redis.call('ZREM', K_LEASES, id)
    redis.call('SREM', k('inflight', u), id)
    redis.call('HDEL', jk, 'deadline', 'worker', 'started', 'leased_at')
    redis.call('HSET', jk, 'status', 'queued')
    -- Refund the fair-share charge taken at lease time.
    local uk = k('user', u)
    redis.call('HSET', uk, 'vfinish', num(redis.call('HGET', uk, 'vfinish'), 0) - num(f[6], 0))
    if f[4] == '1' then
      local first = redis.call('ZRANGE', K_PRIO, 0, 0, 'WITHSCORES')
      redis.call('ZADD', K_PRIO, (first[2] and tonumber(first[2]) or 0) - 1, id)
    else
      local head = redis.call('ZRANGE', k('line', u), 0, 0, 'WITHSCORES')
      local score = tonumber(f[5])
      if head[2] and tonumber(head[2]) <= score then score = tonumber(head[2]) - 1 end
      if redis.call('ZSCORE', K_FS, u) then
        redis.call('ZADD', K_FS, math.max(vtime(), num(redis.call('HGET', uk, 'vfinish'), 0)), u)
      end
      add_to_line(u, id, score, true)
    end
    publish(u, id, 'queued')
  end
  out[#out + 1] = id
  out[#out + 1] = outcome
end
return out
