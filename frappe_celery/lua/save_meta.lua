-- Store a job's meta (RQ's job.meta) in its record, only while the record exists: a vanished
-- job is not brought back as a record with no status and no TTL.
-- KEYS[1] job record   ARGV[1] JSON of the meta dict
-- Returns 1 saved, 0 no such job.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'meta', ARGV[1])
return 1
