-- Ends the sync of some urls (fence.lua runs first): they leave the syncing
-- set. Their states may expire unless changed again since (then they are
-- in the dirty set, and dirty states never expire).
--
-- KEYS[1] meta, KEYS[2] dirty set, KEYS[3] syncing set, then per url its
-- numbers key and its text key. ARGV[1] the epoch, ARGV[2] the TTL in
-- seconds (0: keep), then the urls.
local meta, dirty, syncing = KEYS[1], KEYS[2], KEYS[3]
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 1000 do
  redis.call('SREM', syncing, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if ttl > 0 then
  -- An expired key is no longer proof that a url is new.
  redis.call('HDEL', meta, 'complete')
  for i = 3, #ARGV do
    if redis.call('SISMEMBER', dirty, ARGV[i]) == 0 then
      local k = 2 + 2 * (i - 2)
      redis.call('EXPIRE', KEYS[k], ttl)
      redis.call('EXPIRE', KEYS[k + 1], ttl)
    end
  end
end
return redis.status_reply('OK')
