-- Release a lock only while it still holds the caller's token: a holder whose lock expired
-- (and was taken by someone else) must never free the new holder's lock.
-- KEYS[1] lock key   ARGV[1] token   Returns 1 released, 0 not ours (or gone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
