-- lease.lua: hand the next job, by the current policy, to a worker.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 worker id, 3 lease duration ms, 4 default job cost ms,
--       5 scan limit (candidates looked at per structure),
--       6 default mode (when none was set at runtime)
-- Returns: {"ok", id, token, participant, prompt, extra, attempts, number}
--        | {"none"} when nothing is eligible, dispatch is paused or the
--          worker is being drained
-- The priority lane goes first; then `fifo` (global order), `round_robin`
-- (participants take turns) or `fair_share` (start-time fair queueing on
-- GPU time: lowest virtual start tag first). Every structure is kept up to
-- date whatever the mode, so a mode switch takes effect on the next lease.
local worker, lease_ms, default_cost = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local s = redis.call('HMGET', K_SETTINGS, 'paused_dispatch', 'mode', 'vtime')
if s[1] == '1' then return {'none'} end
if redis.call('SISMEMBER', P .. ':draining', worker) == 1 then return {'none'} end
local mode = s[2] or ARGV[6]
local V = num(s[3], 0)
local caps = k('caps', worker)

local function eligible(id)
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

local id = first_eligible(K_PRIO)
local lane = 'prio'
if not id then
  lane = mode
  if mode == 'fifo' then id = first_eligible(K_QUEUED)
  elseif mode == 'round_robin' then id = by_participant(K_RR)
  else id = by_participant(K_FS) end
end
if not id then return {'none'} end

local jk = k('job', id)
local f = redis.call('HMGET', jk, 'participant', 'prompt', 'extra', 'attempts', 'number')
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
local token = redis.call('HINCRBY', K_SETTINGS, 'fence', 1)
redis.call('HSET', jk, 'status', 'leased', 'token', token, 'worker', worker,
  'leased_at', now, 'deadline', now + lease_ms, 'charge', charge)
redis.call('ZADD', K_LEASES, now + lease_ms, id)
redis.call('SADD', k('inflight', u), id)
publish(u, id, 'leased')
return {'ok', id, tostring(token), u, f[2], f[3], f[4], f[5]}
