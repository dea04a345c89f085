-- Parks a frame on its capability's parked stream, which keeps `bound` entries at most:
-- the oldest go first (a parked frame only grows older, and is dropped as stale anyway).
-- KEYS: 1 the parked stream
-- ARGV: 1 bound (0: unbounded), 2.. field, value, ...
-- Returns {the new entry id, entries dropped, the image_ref of each dropped entry that
-- had one...}. The caller counts the drops (reason 'overflow') in the parked drops hash
-- and releases the images' references: both live in other slots on a Redis Cluster.
local bound = tonumber(ARGV[1])
local dropped, dropped_refs = 0, {}
if bound > 0 then
  local length = redis.call('XLEN', KEYS[1])
  if length >= bound then
    for _, victim in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', length - bound + 1)) do
      redis.call('XDEL', KEYS[1], victim[1])
      dropped = dropped + 1
      local image_ref = image_ref_of(victim[2])
      if image_ref then table.insert(dropped_refs, image_ref) end
    end
  end
end
local fields = {}
for i = 2, #ARGV do table.insert(fields, ARGV[i]) end
return {redis.call('XADD', KEYS[1], '*', unpack(fields)), dropped, unpack(dropped_refs)}
