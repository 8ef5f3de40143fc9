-- Forget ended jobs: delete their records and drop them from the registries.
-- KEYS[1..] registries to drop the ids from   ARGV[1] job record key prefix   ARGV[2..] job ids
-- A record that is not ended (its id was enqueued again since) is left alone, and so is its
-- place in the registries: its id is in use.
local ended = {finished = true, failed = true, canceled = true, stopped = true}
local forgotten = 0
for i = 2, #ARGV do
  local record = ARGV[1] .. ARGV[i]
  local status = redis.call('HGET', record, 'status')
  if not status or ended[status] then
    redis.call('DEL', record)
    for _, registry in ipairs(KEYS) do
      redis.call('ZREM', registry, ARGV[i])
    end
    forgotten = forgotten + 1
  end
end
return forgotten
