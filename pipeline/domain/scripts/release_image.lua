-- Releases references to one claim-checked image; the last one deletes it.
-- KEYS: 1 the image's reference count, 2 the image (same slot: both tagged {frame_id})
-- ARGV: 1 references released (negative: taken, by a re-routed frame that now has more copies)
-- A count that is gone (it expired with its image, or was never set) stays gone: the
-- image's TTL is the safety net. Returns the references left, 0 when the image was
-- deleted, -1 when there was no count.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local ok, left = pcall(redis.call, 'DECRBY', KEYS[1], ARGV[1])
if not ok then return -1 end
if left <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 0
end
return left
