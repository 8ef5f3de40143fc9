-- Cancel a queued job: take its message off the broker list and mark it canceled. If the
-- broker rewrote the message (a redelivery), it is not found and the worker skips the job when
-- it sees the canceled record.
-- KEYS[1] job record   KEYS[2] the broker list holding its message   KEYS[3] canceled registry
-- ARGV[1] token   ARGV[2] now   ARGV[3] record TTL   ARGV[4] job id
-- ARGV[5] registry horizon (s)   ARGV[6] registry size limit (0: none)
-- ARGV[7] job record key prefix
-- Returns the status the job had ('queued' when it was canceled).
local fields = redis.call('HMGET', KEYS[1], 'token', 'status', 'message', 'delivery_tag')
if fields[1] ~= ARGV[1] or fields[2] ~= 'queued' then
  return fields[2] or false
end
local message = fields[3]
if not message and fields[4] then
  message = find_by_tag(KEYS[2], fields[4])
  if message then
    -- Kept on the canceled record: a retry of the job enqueues its arguments again.
    redis.call('HSET', KEYS[1], 'message', message)
  end
end
if message then
  redis.call('LREM', KEYS[2], 1, message)
end
count_end(KEYS[1], 'canceled', nil, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
-- Bounded as finish.lua bounds it for jobs canceled by a worker: with the records go the
-- message copies kept above.
trim_registry(KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7],
  registry_statuses('canceled'))
return 'queued'
