-- release.lua: a worker hands a job back without a result (its ComfyUI went
-- down, it is shutting down): the job is retried at once, like an expired
-- lease but without waiting for the deadline.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 fencing token, 4 max attempts, 5 history limit,
--       6 reason (shown if the job fails for good)
-- Returns: {"ok", requeued | failed | cancelled}
--        | {"err", code, message}, code: not_found, stale_token, already_finished
local id = ARGV[2]
local u, status = check_lease(id, ARGV[3])
if not u then return status end
return {'ok', requeue_job(id, now_ms(), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6])}
