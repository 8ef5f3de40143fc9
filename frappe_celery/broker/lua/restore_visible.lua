-- Which held messages kombu's restore of visible messages may put back on their queues: those
-- held longer than the visibility timeout whose holder's process is gone. A message whose
-- holder is alive is still being worked on (a job whose own timeout outlasts the visibility
-- timeout: Frappe's Data Import runs for hours) and would run twice if restored; its score is
-- renewed instead, so it leaves the window until its holder stops renewing it. A message with
-- no holder recorded is kombu's own (held by a plain kombu consumer): restored as kombu would.
-- KEYS[1] kombu's unacked index   KEYS[2] holders hash (keys.HOLDERS)
-- ARGV[1] the ceiling (now - visibility timeout)   ARGV[2] now   ARGV[3] liveness key prefix
-- (keys.alive without the process)   ARGV[4] at most this many tags (0: all)
-- Returns the tags to restore.
local range
if tonumber(ARGV[4]) > 0 then
  range = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[4])
else
  range = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1])
end
local restore = {}
for _, tag in ipairs(range) do
  local holder = redis.call('HGET', KEYS[2], tag)
  -- A holder is "<process>/<channel number>" (recovery.channel_holder).
  local process = holder and string.match(holder, '^([^/]+)')
  if process and redis.call('EXISTS', ARGV[3] .. process) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], tag)
  else
    restore[#restore + 1] = tag
  end
end
return restore
