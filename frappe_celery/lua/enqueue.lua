-- Publish jobs: for each, the dedup gate, the backpressure check, the status record and the push
-- onto the broker list are ONE atomic step; a batch of them (enqueue_many, a commit's worth of
-- after-commit jobs) is one script call, a single enqueue a batch of one.
-- ARGV[1] number of jobs   ARGV[2] lists per queue (L)   ARGV[3] max queued jobs (0: no limit)
-- ARGV[4] record TTL (s)   ARGV[5] kombu's unacked hash   ARGV[6] now
-- ARGV[7] lost-message grace (s)   ARGV[8] doorbell depth   then per job: '1' to deduplicate,
-- the starvation threshold (0: off), the message, the at-front message, the number N of record
-- field/value items, and those N items.
-- KEYS, per job (4 + L): its record, the broker list for its priority, its queue's at-front
-- list (used when the queue is starved), its queue's doorbell, then every list of its queue.
-- Returns, per job, two items: 1, pending (published); 0, status (deduplicated);
-- -1, pending (overloaded: not published).
local jobs, per_queue = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_queued = tonumber(ARGV[3])
local ttl, unacked, now, grace = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local doorbell_depth = tonumber(ARGV[8])
-- Pending messages per queue (by its first list), counted once per call: only this script's
-- own pushes change them while it runs.
local pending_of = {}
-- Doorbells rung by this call, trimmed once at the end.
local rung = {}
local replies = {}
local a, k = 9, 1
for _ = 1, jobs do
  local deduplicate, starved = ARGV[a], tonumber(ARGV[a + 1])
  local message, at_front_message = ARGV[a + 2], ARGV[a + 3]
  local field_count = tonumber(ARGV[a + 4])
  local fields_from = a + 5
  a = fields_from + field_count
  local record, target = KEYS[k], KEYS[k + 1]
  local queue_lists = {}
  for i = k + 4, k + 3 + per_queue do
    queue_lists[#queue_lists + 1] = KEYS[i]
  end
  local at_front_list, doorbell = KEYS[k + 2], KEYS[k + 3]
  k = k + 4 + per_queue
  local code, info = 1, 0
  if deduplicate == '1' then
    local status = redis.call('HGET', record, 'status')
    if (status == 'queued' or status == 'started')
        and holder_alive(record, queue_lists, unacked, now, grace) then
      code, info = 0, status
    end
  end
  if code == 1 and (max_queued > 0 or starved > 0) then
    local pending = pending_of[queue_lists[1]]
    if pending == nil then
      pending = 0
      for _, key in ipairs(queue_lists) do
        pending = pending + redis.call('LLEN', key)
      end
    end
    pending_of[queue_lists[1]] = pending
    info = pending
    if max_queued > 0 and pending >= max_queued then
      code = -1
    end
  end
  if code == 1 then
    if starved > 0 and info > starved then
      target, message = at_front_list, at_front_message
    end
    -- Reusing a job id replaces the earlier record (Frappe deletes the old job first).
    redis.call('DEL', record)
    redis.call('HSET', record, 'list', target, unpack(ARGV, fields_from, a - 1))
    if deduplicate == '1' then
      -- A deduplicated job's record keeps a copy of its message: the next deduplicated enqueue
      -- of the id finds it in its list with one LPOS. Other records stay small (a ~1 KB field
      -- would also turn Redis's compact encoding of the hash into a table: ~5 KB per job).
      redis.call('HSET', record, 'message', message)
    end
    redis.call('EXPIRE', record, ttl)
    redis.call('LPUSH', target, message)
    -- Wakes one idle worker of the queue (transport.py: idle workers wait on doorbells).
    redis.call('LPUSH', doorbell, '1')
    rung[doorbell] = true
    if pending_of[queue_lists[1]] ~= nil then
      pending_of[queue_lists[1]] = pending_of[queue_lists[1]] + 1
    end
  end
  replies[#replies + 1] = code
  replies[#replies + 1] = info
end
for doorbell in pairs(rung) do
  redis.call('LTRIM', doorbell, 0, doorbell_depth - 1)
end
return replies
