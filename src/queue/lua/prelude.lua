-- prelude.lua: helpers prepended to every queue script (see ../scripts.rs).
--
-- Every script receives the same KEYS (built in keys.rs, in this order) and
-- ARGV[1] = the key prefix, from which per-job and per-participant keys are
-- derived with k(...) using the same layout keys.rs documents.
--   KEYS[1] settings  hash: mode, paused_submit, paused_dispatch, seq, fence,
--                     rr_turn, prio_seq, vtime, max_pending
--   KEYS[2] queued    zset: every queued job outside the priority lane, by order
--   KEYS[3] prio      zset: the priority lane, by bump order
--   KEYS[4] rr        zset: participants with waiting work, by round-robin turn
--   KEYS[5] fs        zset: participants with waiting work, by fair-share start tag
--   KEYS[6] leases    zset: leased/running jobs, by lease deadline (ms)
--   KEYS[7] stats     hash: lifetime counters for metrics
--   KEYS[8] users     set:  every participant that ever submitted
-- Dynamic keys (single Redis instance only; no cluster):
--   <p>:job:<id> hash, <p>:user:<u> hash, <p>:line:<u> zset, <p>:inflight:<u> set,
--   <p>:hist:<u> list, <p>:rt:<u> list, <p>:rt list, <p>:caps:<worker> set,
--   channels <p>:ev:<u> (per participant) and <p>:ev:@admin (settings).
local K_SETTINGS, K_QUEUED, K_PRIO, K_RR, K_FS, K_LEASES, K_STATS, K_USERS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local P = ARGV[1]

local function k(a, b) return P .. ':' .. a .. ':' .. b end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(v, default)
  local n = tonumber(v)
  if n == nil then return default end
  return n
end

local function err(code, message) return {'err', code, message} end

-- Publishes a small change notice on the participant's channel (the admin
-- page pattern-subscribes to all of them). Names and ids are validated by the
-- Rust side ([a-z0-9_-] and UUIDs), so they need no JSON escaping.
local function publish(u, id, status)
  redis.call('PUBLISH', k('ev', u),
    '{"job":"' .. id .. '","participant":"' .. u .. '","status":"' .. status .. '"}')
end

local function vtime() return num(redis.call('HGET', K_SETTINGS, 'vtime'), 0) end

-- Marks participant u as having waiting work (joins the round-robin ring at
-- the back, or at the front when `front`; and the fair-share set at the
-- current virtual time, so no credit is banked while idle).
local function activate(u, front)
  if not redis.call('ZSCORE', K_RR, u) then
    local turn
    if front then
      local first = redis.call('ZRANGE', K_RR, 0, 0, 'WITHSCORES')
      turn = (first[2] and tonumber(first[2]) or 0) - 1
    else
      turn = redis.call('HINCRBY', K_SETTINGS, 'rr_turn', 1)
    end
    redis.call('ZADD', K_RR, turn, u)
  end
  if not redis.call('ZSCORE', K_FS, u) then
    local f = num(redis.call('HGET', k('user', u), 'vfinish'), 0)
    redis.call('ZADD', K_FS, math.max(vtime(), f), u)
  end
end

-- Puts a queued job into its participant's line (and the global fifo order).
local function add_to_line(u, id, score, front)
  redis.call('ZADD', k('line', u), score, id)
  redis.call('ZADD', K_QUEUED, score, id)
  redis.call('HSET', k('job', id), 'order', score)
  activate(u, front)
end

-- Takes a queued job out of its participant's line; a participant with no
-- waiting work left leaves the round-robin ring and the fair-share set.
-- Returns how many jobs the participant still has waiting in their line.
local function remove_from_line(u, id)
  redis.call('ZREM', k('line', u), id)
  redis.call('ZREM', K_QUEUED, id)
  local left = redis.call('ZCARD', k('line', u))
  if left == 0 then
    redis.call('ZREM', K_RR, u)
    redis.call('ZREM', K_FS, u)
  end
  return left
end

-- Removes a queued job from wherever it waits (priority lane or line).
local function unqueue(u, id)
  if redis.call('ZREM', K_PRIO, id) == 0 then remove_from_line(u, id) end
end

-- Records a job's terminal state and appends it to the participant's capped
-- history; the oldest entries beyond the cap are deleted with their job hash.
-- `job_fields` / `user_fields`: more field/value pairs to set in the same
-- write (may be nil).
local function finish_job(u, id, status, now, history_limit, job_fields, user_fields)
  local jf = {'HSET', k('job', id), 'status', status, 'finished', now}
  for _, v in ipairs(job_fields or {}) do jf[#jf + 1] = v end
  redis.call(unpack(jf))
  redis.call('ZREM', K_LEASES, id)
  redis.call('SREM', k('inflight', u), id)
  local uk = k('user', u)
  local uf = {'HSET', uk, 'last_activity', now}
  for _, v in ipairs(user_fields or {}) do uf[#uf + 1] = v end
  redis.call(unpack(uf))
  redis.call('HINCRBY', uk, 'active', -1)
  redis.call('HINCRBY', uk, status, 1)
  redis.call('HINCRBY', K_STATS, status, 1)
  local hk = k('hist', u)
  local len = redis.call('LPUSH', hk, id)
  while len > history_limit do
    redis.call('DEL', k('job', redis.call('RPOP', hk)))
    len = len - 1
  end
  publish(u, id, status)
end

-- Checks a worker's fencing token against the job's current lease.
-- Returns the job's participant and status, or nil plus an error reply.
local function check_lease(id, token)
  local f = redis.call('HMGET', k('job', id), 'participant', 'status', 'token')
  if not f[1] then return nil, err('not_found', 'no such job') end
  if f[3] ~= token then
    return nil, err('stale_token', 'the lease of this job has passed to another worker')
  end
  if f[2] ~= 'leased' and f[2] ~= 'running' then
    if f[2] == 'queued' then
      return nil, err('stale_token', 'the lease of this job has expired')
    end
    return nil, err('already_finished', 'the job has already finished as ' .. f[2])
  end
  return f[1], f[2]
end


-- Takes a leased/running job back from its worker: it returns to the front
-- of its participant's line (or of the priority lane) with attempts + 1, or
-- fails once `max_attempts` is reached (the error says `why`), or ends as
-- cancelled when a cancel was pending. Returns requeued | failed | cancelled.
local function requeue_job(id, now, max_attempts, history_limit, why)
  local jk = k('job', id)
  local f = redis.call('HMGET', jk, 'participant', 'cancel', 'priority', 'order', 'charge')
  local u = f[1]
  local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
  if f[2] == '1' then
    finish_job(u, id, 'cancelled', now, history_limit)
    return 'cancelled'
  end
  if attempts >= max_attempts then
    finish_job(u, id, 'failed', now, history_limit, {'error', cjson.encode({
      type = 'lease_expired',
      message = why .. '; gave up after ' .. attempts .. ' attempts',
      details = ''})})
    return 'failed'
  end
  redis.call('HINCRBY', K_STATS, 'retried', 1)
  redis.call('ZREM', K_LEASES, id)
  redis.call('SREM', k('inflight', u), id)
  redis.call('HDEL', jk, 'deadline', 'worker', 'started', 'leased_at')
  redis.call('HSET', jk, 'status', 'queued')
  -- Refund the fair-share charge taken at lease time.
  local uk = k('user', u)
  redis.call('HSET', uk, 'vfinish', num(redis.call('HGET', uk, 'vfinish'), 0) - num(f[5], 0))
  if f[3] == '1' then
    local first = redis.call('ZRANGE', K_PRIO, 0, 0, 'WITHSCORES')
    redis.call('ZADD', K_PRIO, (first[2] and tonumber(first[2]) or 0) - 1, id)
  else
    local head = redis.call('ZRANGE', k('line', u), 0, 0, 'WITHSCORES')
    local score = tonumber(f[4])
    if head[2] and tonumber(head[2]) <= score then score = tonumber(head[2]) - 1 end
    if redis.call('ZSCORE', K_FS, u) then
      redis.call('ZADD', K_FS, math.max(vtime(), num(redis.call('HGET', uk, 'vfinish'), 0)), u)
    end
    add_to_line(u, id, score, true)
  end
  publish(u, id, 'queued')
  return 'requeued'
end
