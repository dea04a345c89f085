-- Deletes a lock only while it still holds the caller's token: a holder whose lock
-- lapsed (and was taken by another) never releases the new holder's.
-- KEYS: 1 the lock; ARGV: 1 the caller's token. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
