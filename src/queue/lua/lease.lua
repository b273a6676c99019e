-- lease.lua: hand the next job, by the current policy, to a worker.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 worker id, 3 lease duration ms, 4 default job cost ms,
--       5 scan limit (candidates looked at per structure),
--       6 default mode (when none was set at runtime),
--       7 affinity window (jobs looked at; 0 or 1: no affinity),
--       8 affinity on by default ("1"/"0", when not switched at runtime),
--       9 most passes per job (the bound)
-- Returns: {"ok", id, token, participant, prompt, extra, attempts, number}
--        | {"none"} when nothing is eligible, dispatch is paused, the
--          worker is being drained or its pool (<p>:workerpool) is parked,
--          draining or waiting for the line to grow (its burst policy)
-- The priority lane goes first; then `fifo` (global order), `round_robin`
-- (participants take turns) or `fair_share` (start-time fair queueing on
-- GPU time: lowest virtual start tag first). Every structure is kept up to
-- date whatever the mode, so a mode switch takes effect on the next lease.
-- Model affinity (outside the priority lane): among the first `window` jobs
-- this worker could run, in policy order, the first whose model files are
-- all warm on it (<p>:warm:<worker>) goes first; when none is, the first
-- whose files are not warm on another connected worker (that one will
-- want it). The jobs it overtakes count a pass each, and a job passed
-- `max passes` times is taken before any later one — no job is passed
-- over more than that: the bound on what affinity costs anyone.
-- <p>:warm:<worker> is set here to the leased job's files (a prediction),
-- and replaced by what the agent reports once the job ran
-- (report_warm.lua); <p>:warmtok says which lease each is about.
local worker, lease_ms, default_cost = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local s = redis.call('HMGET', K_SETTINGS, 'paused_dispatch', 'mode', 'vtime')
if s[1] == '1' then return {'none'} end
if redis.call('SISMEMBER', P .. ':draining', worker) == 1 then return {'none'} end
-- The worker's pool: parked or draining takes nothing; `line_over:N` only
-- while more than N jobs wait; never more than its `max` jobs held at once.
local pool = redis.call('HGET', P .. ':workerpool', worker)
if pool then
  local ps = redis.call('HMGET', k('pool', pool), 'state', 'burst', 'max')
  if ps[1] == 'parked' or ps[1] == 'draining' then return {'none'} end
  local over = ps[2] and string.match(ps[2], '^line_over:(%d+)$')
  if over and redis.call('ZCARD', K_QUEUED) + redis.call('ZCARD', K_PRIO) <= tonumber(over) then
    return {'none'}
  end
  -- At most `max` jobs held by the pool's workers at once (a rented
  -- endpoint's concurrency): counted over the leases, a few dozen at most.
  local max = tonumber(ps[3] or '0') or 0
  if max > 0 then
    local held = 0
    for _, j in ipairs(redis.call('ZRANGE', K_LEASES, 0, -1)) do
      local w = redis.call('HGET', k('job', j), 'worker')
      if w and redis.call('HGET', P .. ':workerpool', w) == pool then held = held + 1 end
    end
    if held >= max then return {'none'} end
  end
end
local mode = s[2] or ARGV[6]
local window = tonumber(ARGV[7])
local max_passes = tonumber(ARGV[9])
local aff = redis.call('HGET', K_SETTINGS, 'affinity') or ARGV[8]
if aff ~= '1' then window = 0 end
local V = num(s[3], 0)
local caps = k('caps', worker)
-- A worker that reported no catalogue (an older agent) runs anything.
local any = redis.call('EXISTS', caps) == 0

local function eligible(id)
  if any then return true end
  local req = redis.call('HGET', k('job', id), 'requires')
  if not req or req == '' then return true end
  for tag in string.gmatch(req, '[^\n]+') do
    if redis.call('SISMEMBER', caps, tag) == 0 then return false end
  end
  return true
end

local function first_eligible(zkey)
  local ids = redis.call('ZRANGE', zkey, 0, limit - 1)
  for _, id in ipairs(ids) do
    if eligible(id) then return id end
  end
  return nil
end

-- First eligible job among participants in the order of `ring`.
local function by_participant(ring)
  local us = redis.call('ZRANGE', ring, 0, limit - 1)
  for _, u in ipairs(us) do
    local id = first_eligible(k('line', u))
    if id then return id end
  end
  return nil
end

-- The first `max` jobs this worker may run, in the current policy's order.
local function candidates(max)
  local out = {}
  if mode == 'fifo' then
    for _, id in ipairs(redis.call('ZRANGE', K_QUEUED, 0, limit - 1)) do
      if eligible(id) then
        out[#out + 1] = id
        if #out >= max then break end
      end
    end
  else
    local ring = K_FS
    if mode == 'round_robin' then ring = K_RR end
    for _, u in ipairs(redis.call('ZRANGE', ring, 0, limit - 1)) do
      local id = first_eligible(k('line', u))
      if id then
        out[#out + 1] = id
        if #out >= max then break end
      end
    end
  end
  return out
end

-- The model files a job names (its "file:" tags).
local function files_of(id)
  local req = redis.call('HGET', k('job', id), 'requires') or ''
  local files = {}
  for tag in string.gmatch(req, '[^\n]+') do
    if string.sub(tag, 1, 5) == 'file:' then files[#files + 1] = tag end
  end
  return files
end

local warm_key = k('warm', worker)
local function is_warm(id)
  local files = files_of(id)
  if #files == 0 then return false end
  for _, f in ipairs(files) do
    if redis.call('SISMEMBER', warm_key, f) == 0 then return false end
  end
  return true
end

-- Whether every file of job `id` is warm on some other connected worker
-- (the connected workers read once, when first needed).
local others
local function warm_elsewhere(id)
  local files = files_of(id)
  if #files == 0 then return false end
  others = others or redis.call('HKEYS', P .. ':workers')
  for _, w in ipairs(others) do
    if w ~= worker then
      local all = true
      for _, f in ipairs(files) do
        if redis.call('SISMEMBER', k('warm', w), f) == 0 then all = false; break end
      end
      if all then return true end
    end
  end
  return false
end

local id = first_eligible(K_PRIO)
local lane = 'prio'
if not id then
  lane = mode
  local cands = candidates(math.max(window, 1))
  id = cands[1]
  if window > 1 and #cands > 1 then
    local chosen
    local warm_here = redis.call('EXISTS', warm_key) == 1
    for i, c in ipairs(cands) do
      if num(redis.call('HGET', k('job', c), 'passes'), 0) >= max_passes
        or (warm_here and is_warm(c)) then
        chosen = i
        break
      end
    end
    if not chosen then
      for i, c in ipairs(cands) do
        if not warm_elsewhere(c) then chosen = i; break end
      end
    end
    chosen = chosen or 1
    for j = 1, chosen - 1 do redis.call('HINCRBY', k('job', cands[j]), 'passes', 1) end
    id = cands[chosen]
  end
end
if not id then return {'none'} end

local jk = k('job', id)
local f = redis.call('HMGET', jk, 'participant', 'prompt', 'extra', 'attempts', 'number')
-- What will be loaded on this worker once it ran this job.
local files = files_of(id)
if #files > 0 then
  redis.call('DEL', warm_key)
  redis.call('SADD', warm_key, unpack(files))
end
local token = redis.call('HINCRBY', K_SETTINGS, 'fence', 1)
redis.call('HSET', P .. ':warmtok', worker, token)
local u = f[1]
local uk = k('user', u)

-- Fair-share accounting happens whatever the mode: the start tag is the
-- participant's tag in the fair-share set, or max(V, finish tag).
local tag = redis.call('ZSCORE', K_FS, u)
local uf = redis.call('HMGET', uk, 'vfinish', 'weight')
local fin = num(uf[1], 0)
local start = math.max(V, fin)
if lane == 'fair_share' and tag then start = tonumber(tag) end
if lane == 'fair_share' then
  V = start
  redis.call('HSET', K_SETTINGS, 'vtime', V)
end
local times = redis.call('LRANGE', k('rt', u), 0, -1)
local cost = default_cost
if #times > 0 then
  local sum = 0
  for _, t in ipairs(times) do sum = sum + tonumber(t) end
  cost = sum / #times
end
local weight = num(uf[2], 1)
if weight <= 0 then weight = 1 end
local charge = cost / weight
redis.call('HSET', uk, 'vfinish', start + charge)

local left
if lane == 'prio' then
  redis.call('ZREM', K_PRIO, id)
  left = redis.call('ZCARD', k('line', u))
else
  left = remove_from_line(u, id)
end
if left > 0 then
  -- Still waiting work: to the back of the ring, next tag at its finish tag.
  redis.call('ZADD', K_RR, redis.call('HINCRBY', K_SETTINGS, 'rr_turn', 1), u)
  redis.call('ZADD', K_FS, math.max(V, start + charge), u)
end

local now = now_ms()
redis.call('HSET', jk, 'status', 'leased', 'token', token, 'worker', worker,
  'leased_at', now, 'deadline', now + lease_ms, 'charge', charge)
redis.call('ZADD', K_LEASES, now + lease_ms, id)
redis.call('SADD', k('inflight', u), id)
publish(u, id, 'leased')
return {'ok', id, tostring(token), u, f[2], f[3], f[4], f[5]}
