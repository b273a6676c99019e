-- note_output.lua: the hub stored an output file a worker uploaded under a
-- lease; remember it on the job, so that files of an attempt that is not the
-- one recorded (its lease expired after the upload) can be removed when the
-- job ends. Refused when the lease is no longer current: the hub then
-- removes the file it just stored.
-- KEYS: the common list (prelude.lua).
-- ARGV: 1 prefix, 2 job id, 3 fencing token, 4 path (type/subfolder/name,
--       relative to the participant's folder)
-- Returns: {"ok"}
--        | {"err", code, message}, code: not_found, stale_token, already_finished
local id = ARGV[2]
local u, status = check_lease(id, ARGV[3])
if not u then return status end
local jk = k('job', id)
local files = redis.call('HGET', jk, 'files')
if files and files ~= '' then
  files = files .. '\n' .. ARGV[4]
else
  files = ARGV[4]
end
redis.call('HSET', jk, 'files', files)
return {'ok'}
