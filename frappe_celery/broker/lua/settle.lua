-- A worker acks a message (kombu's ack, or a reject without requeue): it leaves kombu's unacked
-- hash and index, and its holder entry, unless another worker holds it now. That happens when
-- this worker was given up for dead (cut off from Redis) and recovery gave its message to
-- another worker, which runs the job again: this worker's late ack must not drop that hold.
-- KEYS[1] kombu's unacked hash   KEYS[2] kombu's unacked index   KEYS[3] holders hash
-- ARGV[1] delivery tag   ARGV[2] this worker (its holder name)
-- Returns 1 settled, 0 left to its current holder.
local holder = redis.call('HGET', KEYS[3], ARGV[1])
if holder and holder ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
