-- heartbeat.lua: a worker extends the lease of a job it still holds.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 fencing token, 4 lease duration ms
-- Returns: {"ok", cancel flag "0"/"1"} (the worker interrupts the job on "1")
--        | {"err", code, message}, code: not_found, stale_token, already_finished
local id = ARGV[2]
local u, status = check_lease(id, ARGV[3])
if not u then return status end
local deadline = now_ms() + tonumber(ARGV[4])
local jk = k('job', id)
redis.call('HSET', jk, 'deadline', deadline)
redis.call('ZADD', K_LEASES, deadline, id)
return {'ok', redis.call('HGET', jk, 'cancel') or '0'}
