-- Record a job's final state (finished, failed, canceled or stopped) and keep its registry
-- bounded.
-- KEYS[1] job record   KEYS[2] started registry   KEYS[3] the registry of ARGV[3]
-- KEYS[4] kombu's unacked hash   KEYS[5] kombu's unacked index   KEYS[6] holders hash
-- KEYS[7] the registry of ARGV[11]
-- ARGV[1] token   ARGV[2] job id   ARGV[3] status   ARGV[4] now   ARGV[5] record TTL (unless
-- the record has its own: results_ttl, failure_ttl)
-- ARGV[6] registry size limit (0: none)   ARGV[7] job record key prefix
-- ARGV[8] delivery tag of the message that ran ('' for none)
-- ARGV[9] the worker whose run ends ('' : any)
-- ARGV[10] registry horizon (s): entries older than this are dropped (the longest record TTL
-- any site keeps; this record's own TTL may be shorter)
-- ARGV[11] the status recorded instead when the record says started ('' : ARGV[3]); a
-- canceled run that was running is stopped, as RQ records it
-- ARGV[12..] extra field/value pairs (result, exc_info, ...)
-- Returns 1 recorded, 0 the record belongs to another enqueue of this id (left alone), -1 this
-- run is stale: another worker has started the same enqueue since, or the record has ended
-- already (left alone).
--
-- A stale run is one whose worker was cut off and given up for dead: its message went back to
-- the queue and another worker runs it now. Its late end (a reply lost with the network, a
-- command Redis receives when the link returns) must neither close the record under the
-- running re-run (the id would look free to a deduplicated enqueue) nor settle the message the
-- re-run holds now.
local record = KEYS[1]
local current = redis.call('HMGET', record, 'token', 'status', 'worker', 'results_ttl',
  'failure_ttl')
if ARGV[9] ~= '' and current[1] == ARGV[1] and current[2] == 'started'
    and current[3] ~= ARGV[9] then
  return -1
end
-- With a delivery tag the message is settled here too: what kombu's ack would remove (the
-- message's entry in the unacked hash and its index; and its holder) goes in the same round
-- trip, and the worker's main process then acks without a Redis call (transport.py). The job
-- has run either way, so this happens even when the record belongs to another enqueue.
local tag = ARGV[8]
if tag ~= '' then
  redis.call('HDEL', KEYS[4], tag)
  redis.call('ZREM', KEYS[5], tag)
  redis.call('HDEL', KEYS[6], tag)
end
if current[1] ~= ARGV[1] then
  return 0
end
-- An ended record is final (records.TRANSITIONS): a late end changes nothing, whoever sends it
-- (a stuck run failed by `stop --stuck` that ends after all, a hard time limit's end racing the
-- job's own).
local was = current[2]
if was == 'finished' or was == 'failed' or was == 'canceled' or was == 'stopped' then
  return -1
end
local status = ARGV[3]
local registry = KEYS[3]
if ARGV[11] ~= '' and current[2] == 'started' then
  status = ARGV[11]
  registry = KEYS[7]
end
local exc_type
for i = 12, #ARGV - 1, 2 do
  if ARGV[i] == 'exc_type' then
    exc_type = ARGV[i + 1]
  end
end
count_end(record, status, exc_type, tonumber(ARGV[4]))
redis.call('HSET', record, 'status', status, 'ended_at', ARGV[4], unpack(ARGV, 12))
-- A job given its own retention at enqueue (Job.keep_for) keeps it; else ARGV[5], its site's.
local own_ttl = current[5]
if status == 'finished' then
  own_ttl = current[4]
end
redis.call('EXPIRE', record, own_ttl or ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', registry, ARGV[4], ARGV[2])
trim_registry(registry, tonumber(ARGV[4]), tonumber(ARGV[10]), tonumber(ARGV[6]), ARGV[7],
  registry_statuses(status))
return 1
