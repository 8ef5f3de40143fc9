-- What a job record's status says of a delivery of the enqueue it records (start.lua, and
-- reserve.lua as it takes the message): 1 it may run, -1 canceled or stopped (skip), -2 already
-- finished or failed (a redelivered duplicate: skip).
local function start_verdict(status)
  if status == 'canceled' or status == 'stopped' then
    return -1
  end
  if status == 'finished' or status == 'failed' then
    return -2
  end
  return 1
end
