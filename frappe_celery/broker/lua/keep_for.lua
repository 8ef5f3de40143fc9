-- Give a job its own retention (RQ's per-job result_ttl / failure_ttl), only while its record
-- exists. finish.lua applies it when the job ends; a job that ended already (a fast job, before
-- the caller got here) gets it now, so the order of the two never matters.
-- KEYS[1] job record   ARGV field/value pairs: results_ttl, failure_ttl
-- Returns 1 saved, 0 no such job.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
local current = redis.call('HMGET', KEYS[1], 'status', 'results_ttl', 'failure_ttl')
local status = current[1]
if status == 'finished' and current[2] then
  redis.call('EXPIRE', KEYS[1], current[2])
elseif (status == 'failed' or status == 'canceled' or status == 'stopped') and current[3] then
  redis.call('EXPIRE', KEYS[1], current[3])
end
return 1
