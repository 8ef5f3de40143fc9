-- Fail the jobs of one queue that are past their hard deadline and can never run again (their
-- worker vanished and their message is gone), so their ids are free again.
-- KEYS[1] started registry   KEYS[2] failed registry   KEYS[3..] every list of the queue
-- ARGV[1] now   ARGV[2] kombu's unacked hash   ARGV[3] lost-message grace (s)
-- ARGV[4] job record key prefix   ARGV[5] failed-record TTL   ARGV[6] reason
-- ARGV[7] failed registry horizon (s)   ARGV[8] failed registry size limit (0: none)
-- Returns the ids marked failed.
local now = tonumber(ARGV[1])
local queue_lists = {}
for i = 3, #KEYS do
  queue_lists[#queue_lists + 1] = KEYS[i]
end
local reaped = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local record = ARGV[4] .. id
  if redis.call('HGET', record, 'status') ~= 'started' then
    redis.call('ZREM', KEYS[1], id)
  elseif not holder_alive(record, queue_lists, ARGV[2], now, tonumber(ARGV[3])) then
    count_end(record, 'abandoned', nil, now)
    redis.call('HSET', record, 'status', 'failed', 'ended_at', now,
      'exc_type', 'AbandonedJobError', 'exc_info', ARGV[6])
    redis.call('EXPIRE', record, ARGV[5])
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], now, id)
    reaped[#reaped + 1] = id
  end
end
if #reaped > 0 then
  trim_registry(KEYS[2], now, tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[4],
    registry_statuses('failed'))
end
return reaped
