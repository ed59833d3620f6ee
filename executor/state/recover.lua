-- Records where a recovery stands (fence.lua runs first): every current
-- state is published again up to offset ARGV[2], even if this claim's term
-- is cut short (the next claim reads it back); the stale mark, now taken
-- into account, goes.
--
-- KEYS[1] meta.
local meta = KEYS[1]
local replay = tonumber(redis.call('HGET', meta, 'replay') or '-1')
if tonumber(ARGV[2]) > replay then
  redis.call('HSET', meta, 'replay', ARGV[2])
end
redis.call('HDEL', meta, 'stale')
return redis.status_reply('OK')
