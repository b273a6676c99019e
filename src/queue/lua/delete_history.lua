-- delete_history.lua: delete finished jobs from a participant's history.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 participant, 3.. job ids (none: clear the whole history)
-- Returns: {"ok", number deleted}; ids of other participants or of jobs
--          not in the history are ignored.
local u = ARGV[2]
local hk = k('hist', u)
local ids = {}
if #ARGV == 2 then
  ids = redis.call('LRANGE', hk, 0, -1)
else
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('LREM', hk, 0, id) > 0 then
    redis.call('DEL', k('job', id))
    n = n + 1
  end
end
if n > 0 then publish(u, '', 'history') end
return {'ok', tostring(n)}
