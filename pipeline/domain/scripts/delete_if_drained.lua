-- Deletes a dead processor's queue (its stream and its delayed set) only when both are
-- empty: a frame a router wrote there after the scheduler read the queue, or a retry
-- that fell due meanwhile, is never deleted unseen; the scheduler reads the queue again.
-- KEYS: 1 stream, 2 delayed sorted set (same slot)
-- Returns 1 when it deleted them, 0 when something is still there.
if redis.call('XLEN', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
