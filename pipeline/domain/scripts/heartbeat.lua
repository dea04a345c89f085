-- Refreshes a processor's registry entry only if it exists, in one step: a heartbeat alone never
-- makes an entry (a lapsed processor registers again, whole), and no reader ever sees a partial
-- one (a hash of stats without the processor's id and capabilities).
-- KEYS: 1 the processor's hash
-- ARGV: 1 TTL in ms, then field, value pairs
-- Returns 1 when it refreshed the entry, 0 when there was none.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
