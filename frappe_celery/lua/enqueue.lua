-- Publish one job: the dedup gate, the backpressure check, the status record and the push onto
-- the broker list are ONE atomic step and one round trip.
-- KEYS[1] job record   KEYS[2] broker list for the job's priority
-- KEYS[3] at-front list (used when the queue is starved)   KEYS[4..] every list of the queue
-- ARGV[1] '1' to deduplicate   ARGV[2] max queued jobs (0: no limit)
-- ARGV[3] starvation threshold (0: off)   ARGV[4] message   ARGV[5] at-front message
-- ARGV[6] record TTL (s)   ARGV[7] kombu's unacked hash   ARGV[8] now   ARGV[9] lost-message
-- grace (s)   ARGV[10..] record field/value pairs
-- Returns {1, pending} published, {0, status} deduplicated, {-1, pending} overloaded.
local record = KEYS[1]
local queue_lists = {}
for i = 4, #KEYS do
  queue_lists[#queue_lists + 1] = KEYS[i]
end
if ARGV[1] == '1' then
  local status = redis.call('HGET', record, 'status')
  if (status == 'queued' or status == 'started')
      and holder_alive(record, queue_lists, ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])) then
    return {0, status}
  end
end
local max_queued = tonumber(ARGV[2])
local starved = tonumber(ARGV[3])
local pending = 0
if max_queued > 0 or starved > 0 then
  for _, key in ipairs(queue_lists) do
    pending = pending + redis.call('LLEN', key)
  end
end
if max_queued > 0 and pending >= max_queued then
  return {-1, pending}
end
local target, message = KEYS[2], ARGV[4]
if starved > 0 and pending > starved then
  target, message = KEYS[3], ARGV[5]
end
-- Reusing a job id replaces the earlier record (Frappe deletes the old job first).
redis.call('DEL', record)
redis.call('HSET', record, 'message', message, 'list', target, unpack(ARGV, 10))
redis.call('EXPIRE', record, ARGV[6])
redis.call('LPUSH', target, message)
return {1, pending}
