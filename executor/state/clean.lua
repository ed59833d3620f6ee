-- Marks synced states clean: a url leaves the dirty set only if it has not
-- changed since the sync read it (its score is still the one read), so a
-- change racing the sync stays dirty. Clean states may expire.
--
-- KEYS[1] meta hash, KEYS[2] dirty zset, KEYS[2+i] state hash of url i.
-- ARGV[1] TTL in seconds (0: keep), then per url: url, score read.
local meta, dirty = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  -- An expired key is no longer proof that a url is new.
  redis.call('HDEL', meta, 'complete')
end
local cleaned = 0
for i = 1, #KEYS - 2 do
  local url, score = ARGV[2 * i], ARGV[2 * i + 1]
  if tonumber(redis.call('ZSCORE', dirty, url)) == tonumber(score) then
    redis.call('ZREM', dirty, url)
    cleaned = cleaned + 1
    if ttl > 0 then
      redis.call('EXPIRE', KEYS[2 + i], ttl)
    end
  end
end
return cleaned
