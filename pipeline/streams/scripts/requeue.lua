-- Hands entries this consumer holds but never started back to the queue: each
-- is appended again (so a blocked reader gets it at once) and the old entry is
-- acknowledged and deleted, atomically. Entries already taken over by another
-- consumer are left to it.
-- KEYS: 1 stream
-- ARGV: 1 group, 2 consumer, 3.. entry ids
local group, consumer = ARGV[1], ARGV[2]
local requeued = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if found[1] then
      redis.call('XADD', KEYS[1], '*', unpack(found[1][2]))
      requeued = requeued + 1
    end
    redis.call('XACK', KEYS[1], group, id)
    redis.call('XDEL', KEYS[1], id)
  end
end
return requeued
