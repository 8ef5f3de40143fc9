-- Shared by enqueue.lua and reap.lua (scripts.py prepends it, after lib_find.lua): is the job
-- holding a record still going to run?
--
-- Alive when its message is held by a worker (kombu's unacked hash: running or reserved; after
-- a worker crash the broker restores it from there) or still waits in one of its queue's lists
-- (as published, or rewritten by a redelivery: then found by its delivery tag).
-- A worker pops a message and only then records it as unacked, so a message is declared lost
-- only after it was seen missing for `grace` seconds (the first miss is noted in the record).
local function message_waiting(list, message, tag, lists)
  -- Only a deduplicated job's record has its message (enqueue.lua); otherwise search by tag.
  if message and redis.call('LPOS', list, message) then
    return true
  end
  -- A redelivery (kombu's restore, recovery) rewrites the message and puts it back on the list
  -- it was pushed onto: the record's own, whichever queue the caller's `lists` belong to (an
  -- enqueue of the same id may name another queue; searching only that one's lists gave the id
  -- away while the job still waited in its own queue, and both ran at once).
  if list and find_by_tag(list, tag) then
    return true
  end
  for _, key in ipairs(lists) do
    if key ~= list and find_by_tag(key, tag) then
      return true
    end
  end
  return false
end

local function holder_alive(record, lists, unacked, now, grace)
  local f = redis.call('HMGET', record, 'list', 'message', 'delivery_tag', 'missing_since')
  local list, message, tag, missing_since = f[1], f[2], f[3], f[4]
  if not tag then
    -- Run in-process (is_async=False): there is no message to look for.
    return true
  end
  if redis.call('HEXISTS', unacked, tag) == 1 or message_waiting(list, message, tag, lists) then
    if missing_since then
      redis.call('HDEL', record, 'missing_since')
    end
    return true
  end
  if not missing_since then
    redis.call('HSET', record, 'missing_since', now)
    return true
  end
  return now - tonumber(missing_since) < grace
end
