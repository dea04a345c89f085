-- Renews the leases of entries this consumer still owns (resets their idle
-- time without counting a delivery). An entry that another consumer has
-- claimed in the meantime is left alone and reported as lost.
-- KEYS: 1 stream
-- ARGV: 1 group, 2 consumer, 3.. entry ids
local group, consumer = ARGV[1], ARGV[2]
local owned, lost = {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    table.insert(owned, id)
  else
    table.insert(lost, id)
  end
end
if #owned > 0 then
  redis.call('XCLAIM', KEYS[1], group, consumer, 0, unpack(owned), 'JUSTID')
end
return lost
