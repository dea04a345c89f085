-- Removes from the group the consumers of dead workers: those that hold no pending
-- entry and have shown no sign of life for longer than idle_ms. A sign of life is
-- the consumer's own touch (KEYS[2], written by StreamConsumer) or, for one that
-- never touched (an older worker, a tool), the idle time Redis keeps for it. A
-- consumer holding entries is never removed: its entries go to live consumers
-- when their leases lapse (claim.lua), and it is removed once it holds none.
-- Touches older than idle_ms are trimmed, so the set keeps only live consumers
-- (and vanishes when none is left).
-- KEYS: 1 stream, 2 the queue's consumers sorted set (same slot)
-- ARGV: 1 group, 2 idle_ms, 3 now_ms (the scheduler's clock; touches carry the workers')
-- Returns the names of the consumers removed.
local group, idle_ms, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local removed = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], group)
  if consumers['err'] then consumers = {} end -- no such group: nothing to remove
  for _, flat in ipairs(consumers) do
    local info = {}
    for i = 1, #flat, 2 do info[flat[i]] = flat[i + 1] end
    local quiet = tonumber(info['idle'])
    local touched = redis.call('ZSCORE', KEYS[2], info['name'])
    if touched then quiet = math.min(quiet, now - tonumber(touched)) end
    if tonumber(info['pending']) == 0 and quiet > idle_ms then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, info['name'])
      table.insert(removed, info['name'])
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - idle_ms))
return removed
