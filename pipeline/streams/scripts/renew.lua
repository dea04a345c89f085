-- Renews the leases of entries this consumer still owns (resets their idle
-- time without counting a delivery). An entry that another consumer has
-- claimed in the meantime is left alone and reported as lost; one that is no
-- longer pending (acknowledged meanwhile) is skipped, not reported.
-- KEYS: 1 stream
-- ARGV: 1 group, 2 consumer, 3.. entry ids
local group, consumer = ARGV[1], ARGV[2]
local owned, lost = {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    table.insert(owned, id)
  elseif pending[1] then
    table.insert(lost, id)
  end
  -- Not pending at all: acknowledged or dead-lettered since the holder listed
  -- it (an ack racing the renewal tick), so there is nothing to renew or lose.
end
if #owned > 0 then
  redis.call('XCLAIM', KEYS[1], group, consumer, 0, unpack(owned), 'JUSTID')
end
return lost
