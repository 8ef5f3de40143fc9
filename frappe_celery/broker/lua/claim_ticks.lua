-- The leader claims the ticks it is about to fire: each entry's last-run time only moves
-- forward, and only while the caller still holds the leader lock. A tick is therefore fired
-- at most once, however many beats run and whatever their clocks say.
-- KEYS[1] leader lock   KEYS[2] last-run hash
-- ARGV[1] leader token   ARGV[2..] pairs: entry field, scheduled time being fired (epoch)
-- Returns the 1-based pair numbers claimed (empty when not the leader).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {}
end
local claimed = {}
for i = 2, #ARGV, 2 do
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > last then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    claimed[#claimed + 1] = (i / 2)
  end
end
return claimed
