-- Set fields of a job's record, only while the record exists: a vanished job is not brought back
-- as a record with no status and no TTL. Used for RQ's job.meta and a job's own retention.
-- KEYS[1] job record   ARGV field/value pairs
-- Returns 1 saved, 0 no such job.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
