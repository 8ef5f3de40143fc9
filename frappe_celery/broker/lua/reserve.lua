-- A worker takes the next waiting message and holds it as kombu holds an unacked delivery, in
-- one step: the message is never out of both its list and kombu's unacked hash (with BRPOP then
-- kombu's own write, a worker killed in between lost it), and it costs one round trip, not two.
-- The holder is recorded too, so that a dead worker's messages can be returned (recover.lua).
-- KEYS[1] kombu's unacked hash   KEYS[2] kombu's unacked index   KEYS[3] holders hash
-- KEYS[4..] the lists, in the order to take from (the worker's -Q order, then priority), then
-- the doorbells of those queues (keys.doorbell)
-- ARGV[1] now (the index score, as kombu writes it)   ARGV[2] the holder (this worker's channel)
-- ARGV[3] how many of the KEYS are doorbells   ARGV[4] job record key prefix
-- Returns {list, message, held, more}, or false when every list is empty. held: 2 held, and
-- the job's own record (the one naming this message's delivery tag) lets it start, as
-- start.lua would decide now; 1 held, start.lua decides when the job starts; 0 taken but not
-- held (not a kombu message: the worker's kombu code handles it as it would after BRPOP).
-- more: 1 when another message waits in these lists, so the worker takes it with this script
-- again; 0 sends it straight to its doorbells.
local last_list = #KEYS - tonumber(ARGV[3])
-- Nothing waits in these queues: their doorbells' tokens would only wake workers for nothing.
local function clear_doorbells()
  for i = last_list + 1, #KEYS do
    redis.call('DEL', KEYS[i])
  end
end
local function more_after(taken_from)
  for i = taken_from, last_list do
    if redis.call('LLEN', KEYS[i]) > 0 then
      return 1
    end
  end
  clear_doorbells()
  return 0
end
for i = 4, last_list do
  local message = redis.call('RPOP', KEYS[i])
  if message then
    local ok, payload = pcall(cjson.decode, message)
    local properties = ok and type(payload) == 'table' and payload['properties']
    local info = type(properties) == 'table' and properties['delivery_info']
    local tag = type(properties) == 'table' and properties['delivery_tag']
    if type(info) ~= 'table' or type(tag) ~= 'string' or type(info['exchange']) ~= 'string'
        or type(info['routing_key']) ~= 'string' then
      return {KEYS[i], message, 0, more_after(i)}
    end
    -- kombu's value: the JSON of [message, exchange, routing_key].
    local unacked_value = '[' .. message .. ', ' .. cjson.encode(info['exchange']) .. ', '
      .. cjson.encode(info['routing_key']) .. ']'
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag, unacked_value)
    redis.call('HSET', KEYS[3], tag, ARGV[2])
    -- Checked here, the worker's pool child can start the job without waiting for start.lua's
    -- reply (worker/task.py). A retry's message (a tag of its own), a record of another enqueue
    -- or none, a canceled or ended job: start.lua decides, before the job runs.
    local held = 1
    local headers = payload['headers']
    local id = type(headers) == 'table' and headers['id']
    if type(id) == 'string' then
      local record = redis.call('HMGET', ARGV[4] .. id, 'delivery_tag', 'status')
      if record[1] == tag and start_verdict(record[2]) == 1 then
        held = 2
      end
    end
    return {KEYS[i], message, held, more_after(i)}
  end
end
clear_doorbells()
return false
