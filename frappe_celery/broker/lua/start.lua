-- A worker takes a job: mark it started, unless this delivery is stale.
-- KEYS[1] job record   KEYS[2] started registry   KEYS[3] scheduled (retry countdown) registry
-- ARGV[1] token   ARGV[2] now   ARGV[3] hard deadline   ARGV[4] worker   ARGV[5] job id
-- ARGV[6] record TTL   ARGV[7] JSON of the job's payload (its arguments; kept for the record's
-- readers and for a retry, since the message leaves Redis once the job ends)
-- Returns 1 run it, 0 the record belongs to another enqueue of this id (run, don't record),
-- -1 canceled or stopped (skip), -2 already finished or failed (a redelivered duplicate: skip),
-- -3 superseded: a deduplicated enqueue has taken the id since (skip).
local record = KEYS[1]
local fields = redis.call('HMGET', record, 'token', 'status', 'message')
if fields[1] ~= ARGV[1] then
  -- Only a deduplicated enqueue keeps a copy of its message (enqueue.lua). It took the id
  -- because this delivery's message was out of sight for the lost-message grace: this one was
  -- given up then, and running it now could run the id twice at once.
  if fields[3] then
    return -3
  end
  return 0
end
local verdict = start_verdict(fields[2])
if verdict ~= 1 then
  return verdict
end
-- The wait from enqueue to the job's first start (a redelivery or a retry starts it again).
local first = redis.call('HMGET', record, 'started_at', 'queue', 'site', 'enqueued_at')
if not first[1] and first[4] then
  observe(METRICS_LATENCY, table.concat({first[2] or '', first[3] or ''}, METRICS_SEP),
    tonumber(ARGV[2]) - tonumber(first[4]))
end
redis.call('HSET', record, 'status', 'started', 'started_at', ARGV[2], 'worker', ARGV[4],
  'payload', ARGV[7])
redis.call('HDEL', record, 'ended_at', 'exc_info', 'exc_type', 'progress', 'progress_message')
redis.call('EXPIRE', record, ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[5])
return 1
