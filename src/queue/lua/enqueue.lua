-- enqueue.lua: accept one job into the queue, or refuse it writing nothing.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 participant, 4 prompt JSON, 5 extra JSON,
--       6 priority lane ("1"/"0"), 7 default max pending jobs per participant,
--       8 max prompt bytes, 9 required capability tags ("\n"-separated, may be
--       empty), 10 workflow name (display only), 11 how long (ms) a
--       disconnected worker still counts as one that can run jobs
-- Returns: {"ok", number} | {"ok", number, "again"} (a retried submit: the
--          job id exists with the same participant and prompt, so the first
--          job is the answer and nothing is written)
--        | {"err", code, message} with code one of
--          prompt_too_large, paused, storage_full (the hub's storage watch
--          says the disks are nearly full), locked, too_many_pending, duplicate_id,
--          not_on_any_worker (no worker connected or seen within ARGV[11]
--          has every tag; with no such worker at all the job is accepted and
--          waits for one)
local id, u, prompt = ARGV[2], ARGV[3], ARGV[4]
local jk = k('job', id)
local earlier = redis.call('HMGET', jk, 'participant', 'prompt', 'number')
if earlier[1] then
  if earlier[1] == u and earlier[2] == prompt then
    return {'ok', tonumber(earlier[3]), 'again'}
  end
  return err('duplicate_id', 'a job with this id already exists')
end
local max_bytes = tonumber(ARGV[8])
if #prompt > max_bytes then
  return err('prompt_too_large', 'the prompt is ' .. #prompt .. ' bytes; the limit is ' .. max_bytes)
end
local s = redis.call('HMGET', K_SETTINGS, 'paused_submit', 'max_pending')
if s[1] == '1' then
  return err('paused', 'the instructor has paused the queue; try again in a moment')
end
if redis.call('GET', P .. ':storage_level') == 'refuse' then
  return err('storage_full', "the workshop's storage is nearly full; your instructor has been told")
end
local uk = k('user', u)
local ui = redis.call('HMGET', uk, 'locked', 'active', 'max_pending')
if ui[1] == '1' then
  return err('locked', 'your account is locked by the instructor')
end
local max_pending = num(ui[3], num(s[2], tonumber(ARGV[7])))
local active = num(ui[2], 0)
if active >= max_pending then
  return err('too_many_pending', 'you already have ' .. active .. ' jobs waiting or running; the limit is ' .. max_pending)
end

local now = now_ms()
if ARGV[9] ~= '' then
  local workers = redis.call('HKEYS', P .. ':workers')
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', P .. ':seen', now - tonumber(ARGV[11]), '+inf')) do
    workers[#workers + 1] = w
  end
  if #workers > 0 then
    local tags = {}
    for tag in string.gmatch(ARGV[9], '[^\n]+') do tags[#tags + 1] = tag end
    local function has_all(w)
      -- A worker that reported no catalogue (an older agent) runs anything.
      if redis.call('EXISTS', k('caps', w)) == 0 then return true end
      for _, tag in ipairs(tags) do
        if redis.call('SISMEMBER', k('caps', w), tag) == 0 then return false end
      end
      return true
    end
    local runnable = false
    for _, w in ipairs(workers) do
      if has_all(w) then runnable = true; break end
    end
    if not runnable then
      for _, tag in ipairs(tags) do
        local somewhere = false
        for _, w in ipairs(workers) do
          if redis.call('SISMEMBER', k('caps', w), tag) == 1 then somewhere = true; break end
        end
        if not somewhere then return err('not_on_any_worker', tag) end
      end
      return err('not_on_any_worker', '')
    end
  end
end
local number = redis.call('HINCRBY', K_SETTINGS, 'seq', 1)
redis.call('HSET', jk, 'id', id, 'participant', u, 'prompt', prompt, 'extra', ARGV[5],
  'created', now, 'status', 'queued', 'attempts', 0, 'priority', ARGV[6],
  'number', number, 'requires', ARGV[9], 'name', ARGV[10])
redis.call('HSET', uk, 'last_activity', now)
redis.call('HINCRBY', uk, 'active', 1)
redis.call('SADD', K_USERS, u)
redis.call('HINCRBY', K_STATS, 'enqueued', 1)
if ARGV[6] == '1' then
  redis.call('ZADD', K_PRIO, redis.call('HINCRBY', K_SETTINGS, 'prio_seq', 1), id)
else
  add_to_line(u, id, number, false)
end
publish(u, id, 'queued')
return {'ok', number}
