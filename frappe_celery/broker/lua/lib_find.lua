-- Shared by lib_liveness.lua and cancel.lua (scripts.py prepends it): find a waiting message by
-- its delivery tag. Only a deduplicated job's record keeps a copy of its message (enqueue.lua);
-- for the others, and for a message the broker rewrote on redelivery, this is the way to it.
-- Linear in the list's length, 500 messages at a time: for the rare paths (a lost message, a
-- cancel), never for an enqueue's usual case.
local function find_by_tag(list, tag)
  local needle = '"delivery_tag": "' .. tag .. '"'
  local length = redis.call('LLEN', list)
  for start = 0, length - 1, 500 do
    for _, candidate in ipairs(redis.call('LRANGE', list, start, start + 499)) do
      if string.find(candidate, needle, 1, true) then
        return candidate
      end
    end
  end
  return false
end
