-- Pending messages of one queue by site, for the metrics (ops/metrics.py): the sites are read
-- from the job ids in the messages' headers, server side, so only counts cross the wire.
-- KEYS: the queue's lists, highest priority first
-- ARGV[1] how many messages to read at most, over all lists (bounds the time Redis spends)
-- ARGV[2] what ends the site in a job id ('||', or '::' for Frappe 15's ids)
-- ARGV[3] job record key prefix
-- Returns {read, site, count, oldest enqueued_at ('' unknown), site, count, ...}: a site's
-- oldest is its first message from the right (the worker pops from the right).
local limit, separator, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local counts, oldest_at, order = {}, {}, {}
local read = 0
for _, list in ipairs(KEYS) do
  local first_of = {}
  local stop = -1
  while read < limit do
    local size = math.min(500, limit - read)
    local chunk = redis.call('LRANGE', list, stop - size + 1, stop)
    if #chunk == 0 then
      break
    end
    read = read + #chunk
    for i = #chunk, 1, -1 do
      local message = chunk[i]
      local site = ''
      local id_at = string.find(message, '"id": "', 1, true)
      local id
      if id_at then
        local id_end = string.find(message, '"', id_at + 7, true)
        if id_end then
          id = string.sub(message, id_at + 7, id_end - 1)
          local cut = string.find(id, separator, 1, true)
          if cut then
            site = string.sub(id, 1, cut - 1)
          end
        end
      end
      if counts[site] == nil then
        counts[site] = 0
        order[#order + 1] = site
      end
      counts[site] = counts[site] + 1
      if first_of[site] == nil and id then
        first_of[site] = id
      end
    end
    stop = stop - #chunk
    if #chunk < size then
      break
    end
  end
  -- Each list's first message of a site may be its oldest; the record says when it came.
  for site, id in pairs(first_of) do
    local at = tonumber(redis.call('HGET', prefix .. id, 'enqueued_at'))
    if at and (oldest_at[site] == nil or at < oldest_at[site]) then
      oldest_at[site] = at
    end
  end
end
local reply = {read}
for _, site in ipairs(order) do
  reply[#reply + 1] = site
  reply[#reply + 1] = counts[site]
  reply[#reply + 1] = oldest_at[site] and tostring(oldest_at[site]) or ''
end
return reply
