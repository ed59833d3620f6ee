-- Prepended to every script that writes a partition, and run alone to say
-- why a transaction found another epoch (fenced.go): KEYS[1] is its meta
-- hash, ARGV[1] the caller's epoch. A caller whose epoch is older than the
-- partition's (a newer executor claimed it) may not write; a partition
-- without an epoch was lost (Redis restarted empty or was flushed), one
-- whose epoch is older than the caller's went back in time (restored from
-- an older snapshot): both need recovering. Epochs count claims, far below
-- 2^53, so Lua's numbers compare them exactly.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return redis.error_reply('DXLOST partition state is gone from Redis')
end
if tonumber(epoch) > tonumber(ARGV[1]) then
  return redis.error_reply('DXFENCED partition epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end
if epoch ~= ARGV[1] then
  -- The claim that recovers must know: what Redis lost cannot be told from
  -- what it kept (see claim.lua).
  redis.call('HSET', KEYS[1], 'stale', '1')
  return redis.error_reply('DXSTALE partition epoch is ' .. epoch .. ', older than the caller\'s ' .. ARGV[1])
end
