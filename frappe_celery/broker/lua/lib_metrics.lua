-- Job counters and histograms, kept by the scripts that record each step of a job (see
-- broker/counters.py, which writes the METRICS_* constants above this file).

-- The label a method counts under: its own while fewer than METRICS_METHOD_LABELS methods
-- have one (once given, kept), else 'other'.
local function metric_method(method)
  if not method or method == '' then
    return METRICS_OTHER
  end
  if redis.call('SISMEMBER', METRICS_METHODS, method) == 1 then
    return method
  end
  if redis.call('SCARD', METRICS_METHODS) < METRICS_METHOD_LABELS then
    redis.call('SADD', METRICS_METHODS, method)
    return method
  end
  return METRICS_OTHER
end

-- One more job of (queue, site, method) came to ``outcome`` (counters.Outcome).
local function count_outcome(queue, site, method, outcome)
  local field = table.concat({queue or '', site or '', metric_method(method), outcome},
    METRICS_SEP)
  redis.call('HINCRBY', METRICS_OUTCOMES, field, 1)
end

-- One observation of ``seconds`` in the histogram ``hash`` under ``labels``: its bucket's
-- count (the first whose bound holds it; one past the last is +Inf) and the sum.
local function observe(hash, labels, seconds)
  if seconds < 0 then
    seconds = 0
  end
  local bucket = #METRICS_BUCKETS + 1
  for i, bound in ipairs(METRICS_BUCKETS) do
    if seconds <= bound then
      bucket = i
      break
    end
  end
  redis.call('HINCRBY', hash, labels .. METRICS_SEP .. bucket, 1)
  redis.call('HINCRBYFLOAT', hash, labels .. METRICS_SEP .. 'sum', seconds)
end

-- A job's run ended with ``status`` (a record status); ``exc_type`` tells a time limit apart.
local function count_end(record, status, exc_type, now)
  local f = redis.call('HMGET', record, 'queue', 'site', 'method', 'started_at')
  local outcome = status
  if status == 'failed' and exc_type and METRICS_TIMEOUTS[exc_type] then
    outcome = 'timed_out'
  end
  count_outcome(f[1], f[2], f[3], outcome)
  if f[4] and status ~= 'canceled' then
    observe(METRICS_RUN_TIME, table.concat({f[1] or '', metric_method(f[3])}, METRICS_SEP),
      now - tonumber(f[4]))
  end
end
