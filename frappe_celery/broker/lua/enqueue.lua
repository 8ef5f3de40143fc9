-- Publish jobs: for each, the dedup gate, the backpressure check, the status record and the push
-- onto the broker list are ONE atomic step; a batch of them (enqueue_many, a commit's worth of
-- after-commit jobs) is one script call, a single enqueue a batch of one.
-- ARGV[1] number of jobs J   ARGV[2] lists per queue (L)   ARGV[3] max queued jobs (0: no limit)
-- ARGV[4] record TTL (s)   ARGV[5] kombu's unacked hash   ARGV[6] now
-- ARGV[7] lost-message grace (s)   ARGV[8] doorbell depth   ARGV[9] number F of record fields
-- ARGV[10 .. 9+F] the record's field names; then per job: the index in KEYS of its queue's
-- doorbell, its target list's position among the queue's lists (1: highest priority), '1' to
-- deduplicate, the starvation threshold (0: off), the message, the at-front message, and its F
-- record values in the order of the names ('': field left out).
-- KEYS: per queue of the batch, its doorbell then its L lists, highest priority (the at-front
-- list) first; then the J jobs' records, in order. A queue's keys come once per call, the record
-- field names too: a batch sends per job only what is its own.
-- Returns, per job, two items: 1, pending (published); 0, status (deduplicated);
-- -1, pending (overloaded: not published). A job whose record already holds its token was
-- published by this very call, sent again (redis-py re-sends a command whose reply a broken
-- connection lost): 1, 0, and nothing is written twice.
local jobs, per_queue = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_queued = tonumber(ARGV[3])
local ttl, unacked, now, grace = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local doorbell_depth, field_count = tonumber(ARGV[8]), tonumber(ARGV[9])
local first_record = #KEYS - jobs
local at = {}
for i = 0, field_count - 1 do
  at[ARGV[10 + i]] = i
end
local token_at = at['token']
-- Pending messages per queue (by its doorbell), counted once per call: only this script's own
-- pushes change them while it runs.
local pending_of = {}
-- Jobs pushed per doorbell by this call: each doorbell is rung once at the end.
local rings = {}
-- Each queue's lists, as a table for holder_alive.
local lists_of = {}
local replies = {}
local a = 10 + field_count
for job = 1, jobs do
  local doorbell_at, target_at = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local deduplicate, starved = ARGV[a + 2], tonumber(ARGV[a + 3])
  local message, at_front_message = ARGV[a + 4], ARGV[a + 5]
  local values_from = a + 6
  a = values_from + field_count
  local record, doorbell = KEYS[first_record + job], KEYS[doorbell_at]
  local target, at_front_list = KEYS[doorbell_at + target_at], KEYS[doorbell_at + 1]
  local queue_lists = lists_of[doorbell_at]
  if queue_lists == nil then
    queue_lists = {}
    for i = doorbell_at + 1, doorbell_at + per_queue do
      queue_lists[#queue_lists + 1] = KEYS[i]
    end
    lists_of[doorbell_at] = queue_lists
  end
  local code, info = 1, 0
  -- Published already by this very call, sent again (see above): nothing more to write.
  local resent = redis.call('HGET', record, 'token') == ARGV[values_from + token_at]
  if not resent and deduplicate == '1' then
    local status = redis.call('HGET', record, 'status')
    if (status == 'queued' or status == 'started')
        and holder_alive(record, queue_lists, unacked, now, grace) then
      code, info = 0, status
    end
  end
  if not resent and code == 1 and (max_queued > 0 or starved > 0) then
    local pending = pending_of[doorbell]
    if pending == nil then
      pending = 0
      for _, key in ipairs(queue_lists) do
        pending = pending + redis.call('LLEN', key)
      end
    end
    pending_of[doorbell] = pending
    info = pending
    if max_queued > 0 and pending >= max_queued then
      code = -1
    end
  end
  if not resent and code == 1 then
    if starved > 0 and info > starved then
      target, message = at_front_list, at_front_message
    end
    local fields = {'list', target}
    for i = 0, field_count - 1 do
      local value = ARGV[values_from + i]
      if value ~= '' then
        fields[#fields + 1] = ARGV[10 + i]
        fields[#fields + 1] = value
      end
    end
    if deduplicate == '1' then
      -- A deduplicated job's record keeps a copy of its message: the next deduplicated enqueue
      -- of the id finds it in its list with one LPOS. Other records stay small (a ~1 KB field
      -- would also turn Redis's compact encoding of the hash into a table: ~5 KB per job).
      fields[#fields + 1] = 'message'
      fields[#fields + 1] = message
    end
    -- Reusing a job id replaces the earlier record (Frappe deletes the old job first).
    redis.call('DEL', record)
    redis.call('HSET', record, unpack(fields))
    redis.call('EXPIRE', record, ttl)
    redis.call('LPUSH', target, message)
    rings[doorbell] = (rings[doorbell] or 0) + 1
    if pending_of[doorbell] ~= nil then
      pending_of[doorbell] = pending_of[doorbell] + 1
    end
  end
  if code ~= 1 then
    local function value(name)
      return ARGV[values_from + at[name]]
    end
    count_outcome(value('queue'), value('site'), value('method'),
      code == 0 and 'deduplicated' or 'overloaded')
  end
  replies[#replies + 1] = code
  replies[#replies + 1] = info
end
-- Wakes as many idle workers of each queue as it got jobs, up to the depth
-- (transport.py: idle workers wait on doorbells).
for doorbell, count in pairs(rings) do
  local tokens = {}
  for i = 1, math.min(count, doorbell_depth) do
    tokens[i] = '1'
  end
  redis.call('LPUSH', doorbell, unpack(tokens))
  redis.call('LTRIM', doorbell, 0, doorbell_depth - 1)
end
return replies
