-- Deletes one queued frame and counts it as dropped with its reason, once: only the
-- caller that deleted it counts it, so two schedulers (or a retried command) never
-- count a drop twice, and a crash never deletes a frame without counting it.
-- KEYS: 1 stream, 2 drops hash of that stream's queue (same slot)
-- ARGV: 1 entry id, 2 reason
-- Returns {1, its image_ref or false} when this call deleted (and counted) the entry, else {0}.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  return {1, found[1] and image_ref_of(found[1][2])}
end
return {0}
