-- Put a job back to "queued" (a retry is scheduled, or its worker died and the broker will
-- deliver it again), only if the record still belongs to this enqueue.
-- KEYS[1] job record   KEYS[2] started registry
-- ARGV[1] token   ARGV[2] job id   ARGV[3..] field/value pairs
-- Returns 1 updated, 0 stale.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued', unpack(ARGV, 3))
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
