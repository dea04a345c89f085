-- Housekeeping a consumer runs before it blocks for new entries.
-- KEYS: 1 stream, 2 delayed sorted set, 3 dead-letter stream
-- ARGV: 1 group, 2 consumer, 3 now_ms, 4 lease_ms, 5 max_deliveries,
--       6 claim_count, 7 dead_ttl_ms, 8 queue_name, 9 promote_count
-- 1. Moves delayed messages that are due into the stream (atomically: the
--    entry is in exactly one of the two keys at any time).
-- 2. Entries whose lease lapsed (pending and idle longer than lease_ms: their
--    consumer died or lost Redis) are claimed by this consumer, or, when
--    already delivered max_deliveries times, dead-lettered as poison.
-- Returns {claimed entries, eta of the next delayed message or false, poisoned ids,
-- the image_refs of the poisoned entries that had one}.
local group, consumer = ARGV[1], ARGV[2]
local now_ms, lease_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_deliveries, claim_count = tonumber(ARGV[5]), tonumber(ARGV[6])
local dead_ttl_ms, queue_name = tonumber(ARGV[7]), ARGV[8]
local promote_count = tonumber(ARGV[9])

ensure_group(group)

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, promote_count)
for _, member in ipairs(due) do
  local delayed = cjson.decode(member)
  redis.call('XADD', KEYS[1], '*', unpack(delayed['f']))
  redis.call('ZREM', KEYS[2], member)
end

local claimed, poisoned, poisoned_refs = {}, {}, {}
if claim_count > 0 then
  local expired = redis.call('XPENDING', KEYS[1], group, 'IDLE', lease_ms, '-', '+', claim_count)
  local ids = {}
  for _, pending in ipairs(expired) do
    local id, deliveries = pending[1], tonumber(pending[4])
    if deliveries >= max_deliveries then
      local image_ref = dead_letter(group, id,
        'poison: delivered ' .. deliveries .. ' times and never acknowledged ' ..
        '(each time its worker died or lost Redis before finishing)',
        false, now_ms, dead_ttl_ms, queue_name)
      table.insert(poisoned, id)
      if image_ref then table.insert(poisoned_refs, image_ref) end
    else
      table.insert(ids, id)
    end
  end
  if #ids > 0 then
    local entries = redis.call('XCLAIM', KEYS[1], group, consumer, lease_ms, unpack(ids))
    for _, entry in ipairs(entries) do
      -- A pending entry whose data was deleted comes back empty: acknowledge it away.
      if type(entry) == 'table' and entry[2] then
        table.insert(claimed, entry)
      elseif type(entry) == 'table' and entry[1] then
        redis.call('XACK', KEYS[1], group, entry[1])
      end
    end
  end
end

local next_due = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {claimed, next_due[2] or false, poisoned, poisoned_refs}
