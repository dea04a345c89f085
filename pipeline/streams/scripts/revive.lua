-- Moves dead letters back to their queue, without their dead_* fields.
-- KEYS: 1 stream, 2 delayed (unused), 3 dead-letter stream
-- ARGV: 1.. dead-letter entry ids ('*' alone: all of them)
local entries
if ARGV[1] == '*' then
  entries = redis.call('XRANGE', KEYS[3], '-', '+')
else
  entries = {}
  for i = 1, #ARGV do
    local found = redis.call('XRANGE', KEYS[3], ARGV[i], ARGV[i])
    if found[1] then table.insert(entries, found[1]) end
  end
end
for _, entry in ipairs(entries) do
  local fields = {}
  local stored = entry[2]
  for i = 1, #stored, 2 do
    if string.sub(stored[i], 1, 5) ~= 'dead_' then
      table.insert(fields, stored[i])
      table.insert(fields, stored[i + 1])
    end
  end
  if #fields > 0 then
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
  redis.call('XDEL', KEYS[3], entry[1])
end
return #entries
