-- Shared by every script (prepended by pipeline/streams/lua.py).

-- The claim-checked image an entry's fields (a flat XRANGE reply) name, or false:
-- a script that removes a frame for good returns it, so that its caller releases
-- the image's reference (the image lives in another slot on a Redis Cluster).
local function image_ref_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'image_ref' then return fields[i + 1] end
  end
  return false
end

-- Moves one entry of KEYS[1] (the stream) to KEYS[3] (its dead-letter stream)
-- with the reason, then acknowledges and deletes it, all inside the caller's
-- atomic script. `envelope` (may be false) replaces the stored message field,
-- so the dead letter keeps what the worker knew (retry counts, traceback).
-- Dead letters older than `ttl_ms` are trimmed on the way. Returns the entry's
-- image_ref (or false): a dead letter is done for good, its image reference goes.
local function dead_letter(group, id, reason, envelope, now_ms, ttl_ms, queue_name)
  local found = redis.call('XRANGE', KEYS[1], id, id)
  local fields = {}
  local image_ref = false
  if found[1] then
    local stored = found[1][2]
    image_ref = image_ref_of(stored)
    for i = 1, #stored, 2 do
      local name = stored[i]
      if not (envelope and name == 'message') and string.sub(name, 1, 5) ~= 'dead_' then
        table.insert(fields, name)
        table.insert(fields, stored[i + 1])
      end
    end
  end
  if envelope then
    table.insert(fields, 'message')
    table.insert(fields, envelope)
  end
  table.insert(fields, 'dead_reason')
  table.insert(fields, reason)
  table.insert(fields, 'dead_queue')
  table.insert(fields, queue_name)
  table.insert(fields, 'dead_entry_id')
  table.insert(fields, id)
  table.insert(fields, 'dead_at_ms')
  table.insert(fields, tostring(now_ms))
  redis.call('XADD', KEYS[3], '*', unpack(fields))
  redis.call('XTRIM', KEYS[3], 'MINID', tostring(now_ms - ttl_ms))
  redis.call('XACK', KEYS[1], group, id)
  redis.call('XDEL', KEYS[1], id)
  return image_ref
end

-- Creates the consumer group if the stream or the group is missing (a new
-- queue, a flushed queue or a Redis restarted without persistence).
local function ensure_group(group)
  local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], group, '0', 'MKSTREAM')
  return ok
end
