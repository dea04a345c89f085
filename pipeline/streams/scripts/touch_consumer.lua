-- A consumer says it lives: its name, scored with the server's clock (ms, so that
-- the clocks of worker hosts do not matter), in the queue's sorted set of consumers.
-- A consumer that holds nothing and has not said so for a while belongs to a dead
-- worker: the scheduler removes it from the group (remove_idle_consumers.lua).
-- KEYS: 1 the queue's consumers sorted set
-- ARGV: 1 consumer
local now = redis.call('TIME')
redis.call('ZADD', KEYS[1], now[1] * 1000 + math.floor(now[2] / 1000), ARGV[1])
