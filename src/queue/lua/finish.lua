-- finish.lua: a worker reports the end of a job (completion or failure).
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 fencing token,
--       4 outcome: succeeded | failed | cancelled,
--       5 outputs JSON, 6 error JSON ("" when none),
--       7 measured GPU milliseconds (-1 when unknown; recorded as at most
--       a day), 8 history limit
-- Returns: {"ok"} | {"err", code, message}, code: not_found, stale_token,
--          already_finished, invalid
-- Records the outcome, appends to the participant's history, corrects the
-- participant's fair-share finish tag with the measured GPU time and adds
-- that time to the worker's pool (<p>:pool:<name> gpu_ms).
local id, outcome, gpu_ms = ARGV[2], ARGV[4], tonumber(ARGV[7])
if outcome ~= 'succeeded' and outcome ~= 'failed' and outcome ~= 'cancelled' then
  return err('invalid', 'unknown outcome ' .. outcome)
end
local u, status = check_lease(id, ARGV[3])
if not u then return status end
local jk = k('job', id)
local uk = k('user', u)
local job_fields = {'outputs', ARGV[5], 'error', ARGV[6]}
local user_fields = {}
if gpu_ms >= 0 then
  -- At most a day (MAX_GPU_SECONDS), and -0 as 0: a garbled report must
  -- neither break HINCRBY (Lua writes 1e300 as 1e+300, and Redis reads
  -- neither that nor -0 as an integer) nor push the participant's
  -- fair-share tag out of reach.
  gpu_ms = math.max(0, math.min(gpu_ms, 86400000))
  job_fields[#job_fields + 1] = 'gpu_ms'
  job_fields[#job_fields + 1] = gpu_ms
  redis.call('HINCRBY', uk, 'gpu_ms', math.floor(gpu_ms))
  local uf = redis.call('HMGET', uk, 'weight', 'vfinish')
  local weight = num(uf[1], 1)
  if weight <= 0 then weight = 1 end
  local charged = num(redis.call('HGET', jk, 'charge'), 0)
  local fin = num(uf[2], 0) + gpu_ms / weight - charged
  user_fields = {'vfinish', fin}
  if redis.call('ZSCORE', K_FS, u) then
    redis.call('ZADD', K_FS, math.max(vtime(), fin), u)
  end
  -- The GPU time its worker's pool was used for (its cost).
  local pool = redis.call('HGET', P .. ':workerpool', redis.call('HGET', jk, 'worker') or '')
  if pool then redis.call('HINCRBY', k('pool', pool), 'gpu_ms', math.floor(gpu_ms)) end
  if outcome == 'succeeded' then
    if redis.call('LPUSH', k('rt', u), gpu_ms) > 10 then redis.call('LTRIM', k('rt', u), 0, 9) end
    if redis.call('LPUSH', P .. ':rt', gpu_ms) > 50 then redis.call('LTRIM', P .. ':rt', 0, 49) end
  end
end
finish_job(u, id, outcome, now_ms(), tonumber(ARGV[8]), job_fields, user_fields)
return {'ok'}
