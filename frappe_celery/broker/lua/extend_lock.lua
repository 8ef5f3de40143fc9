-- Extend a lock only while it still holds the caller's token (a holder that lost it must not
-- take it back from the new holder).
-- KEYS[1] lock key   ARGV[1] token   ARGV[2] new TTL (ms)   Returns 1 extended, 0 not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
