-- Prepended to every script that writes a partition: KEYS[1] is its meta
-- hash, ARGV[1] the caller's epoch. A caller whose epoch is not the
-- partition's (a newer executor claimed it) may not write; a partition
-- without an epoch was lost (Redis restarted empty or was flushed).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return redis.error_reply('DXLOST partition state is gone from Redis')
end
if epoch ~= ARGV[1] then
  return redis.error_reply('DXFENCED partition epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end
