-- Return one message held by a dead worker to the front of its queue, exactly once: only if it
-- is still held by that worker, as it was read (a message acked or restored meanwhile is left
-- alone). kombu's own restore does the same moves (restore_by_tag, leftmost=False).
-- KEYS[1] kombu's unacked hash   KEYS[2] kombu's unacked index   KEYS[3] holders hash
-- KEYS[4] the list to return it to   KEYS[5] its queue's doorbell (keys.doorbell)
-- ARGV[1] delivery tag   ARGV[2] the dead holder   ARGV[3] the held value as read
-- ARGV[4] the message to push (kombu's, marked redelivered)   ARGV[5] doorbell depth
-- Returns 1 returned, 0 left alone.
local tag = ARGV[1]
if redis.call('HGET', KEYS[3], tag) ~= ARGV[2] then
  return 0
end
local held = redis.call('HGET', KEYS[1], tag)
if held ~= ARGV[3] then
  if not held then
    -- Settled by a path that does not know about holders: drop the stale attribution.
    redis.call('HDEL', KEYS[3], tag)
  end
  return 0
end
redis.call('HDEL', KEYS[1], tag)
redis.call('ZREM', KEYS[2], tag)
redis.call('HDEL', KEYS[3], tag)
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[5]) - 1)
return 1
