-- Put a job back to "queued" (a retry is scheduled, or its worker died and the broker will
-- deliver it again), only if the record still belongs to this enqueue.
-- KEYS[1] job record   KEYS[2] started registry   KEYS[3] scheduled (retry countdown) registry
-- ARGV[1] token   ARGV[2] job id   ARGV[3] when the retry is due (0: not a retry)
-- ARGV[4..] field/value pairs
-- Returns 1 updated, 0 stale or already final.
local fields = redis.call('HMGET', KEYS[1], 'token', 'status')
if fields[1] ~= ARGV[1] then
  return 0
end
-- A worker lost after its job was recorded finished, failed, canceled or stopped: nothing runs
-- again.
local status = fields[2]
if status == 'finished' or status == 'failed' or status == 'canceled' or status == 'stopped' then
  return 0
end
if tonumber(ARGV[3]) > 0 then
  local f = redis.call('HMGET', KEYS[1], 'queue', 'site', 'method')
  count_outcome(f[1], f[2], f[3], 'retried')
end
redis.call('HSET', KEYS[1], 'status', 'queued', unpack(ARGV, 4))
redis.call('ZREM', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
end
return 1
