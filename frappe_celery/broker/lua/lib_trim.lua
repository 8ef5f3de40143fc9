-- Shared by finish.lua, cancel.lua and reap.lua (scripts.py prepends it): an ended-jobs registry
-- stays bounded by age and by count, whichever path ends the job.

-- The statuses a registry of ended jobs holds: the failed registry keeps failed and stopped jobs.
local function registry_statuses(status)
  if status == 'failed' or status == 'stopped' then
    return {failed = true, stopped = true}
  end
  return {[status] = true}
end

-- Drop the entries older than `horizon` seconds (the longest record TTL any site keeps: they
-- point at expired records), then the oldest beyond `limit` (0: none) with their records,
-- message copies and tracebacks included. A trimmed id enqueued again since keeps its new
-- record (its status is not one of `kept`).
local function trim_registry(registry, now, horizon, limit, prefix, kept)
  redis.call('ZREMRANGEBYSCORE', registry, '-inf', now - horizon)
  if limit <= 0 then
    return
  end
  local excess = redis.call('ZCARD', registry) - limit
  if excess <= 0 then
    return
  end
  for _, id in ipairs(redis.call('ZRANGE', registry, 0, excess - 1)) do
    local key = prefix .. id
    if kept[redis.call('HGET', key, 'status')] then
      redis.call('DEL', key)
    end
  end
  redis.call('ZREMRANGEBYRANK', registry, 0, excess - 1)
end
