-- Appends a frame to a bounded processor queue and counts what the bound costs.
-- KEYS: 1 stream, 2 delayed (unused), 3 dead (unused), 4 drops hash of this queue
-- ARGV: 1 bound (0: unbounded), 2 policy ('drop_oldest' | 'reject_newest'), 3.. field, value, ...
-- drop_oldest deletes the oldest entries no consumer has taken yet (never one in
-- progress); reject_newest refuses the new one. Drops are counted in KEYS[4] under 'bound'.
-- Returns {the new entry id, or false when rejected; the image_ref of each entry dropped
-- that had one...}: the caller releases those images' references (another slot).
local bound, policy = tonumber(ARGV[1]), ARGV[2]
local dropped_refs = {}
if bound > 0 then
  local length = redis.call('XLEN', KEYS[1])
  if length >= bound then
    if policy == 'reject_newest' then
      redis.call('HINCRBY', KEYS[4], 'bound', 1)
      return {false}
    end
    local last_delivered = '0-0'
    local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
    if ok then
      for _, group in ipairs(groups) do
        for i = 1, #group, 2 do
          if group[i] == 'last-delivered-id' then last_delivered = group[i + 1] end
        end
      end
    end
    local victims = redis.call('XRANGE', KEYS[1], '(' .. last_delivered, '+', 'COUNT', length - bound + 1)
    for _, victim in ipairs(victims) do
      redis.call('XDEL', KEYS[1], victim[1])
      local image_ref = image_ref_of(victim[2])
      if image_ref then table.insert(dropped_refs, image_ref) end
    end
    if #victims > 0 then
      redis.call('HINCRBY', KEYS[4], 'bound', #victims)
    end
  end
end
local fields = {}
for i = 3, #ARGV do table.insert(fields, ARGV[i]) end
return {redis.call('XADD', KEYS[1], '*', unpack(fields)), unpack(dropped_refs)}
