-- A consumer says it lives: its name, scored with the time (epoch ms) it says so, in the
-- queue's sorted set of consumers. A consumer that holds nothing and has not said so for
-- a while belongs to a dead worker: the scheduler removes it from the group
-- (remove_idle_consumers.lua). The time is the worker's clock, as Dramatiq's RedisBroker
-- heartbeats are: the least-privilege ACL user may not run TIME.
-- KEYS: 1 the queue's consumers sorted set
-- ARGV: 1 consumer, 2 now_ms
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
