-- Dead-letters one entry with its reason; returns its image_ref, if it has one.
-- KEYS: 1 stream, 2 delayed (unused, keeps the key layout uniform), 3 dead-letter stream
-- ARGV: 1 group, 2 entry id, 3 reason, 4 envelope ('' keeps the stored one),
--       5 now_ms, 6 dead_ttl_ms, 7 queue_name
local envelope = ARGV[4]
if envelope == '' then envelope = false end
return dead_letter(ARGV[1], ARGV[2], ARGV[3], envelope, tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7])
