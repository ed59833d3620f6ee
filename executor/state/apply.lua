-- Merges one batch of updates into a partition's state: the Redis copy of
-- document.Merge (executor/document), checked against the same cases.
--
-- KEYS[1] meta hash {epoch, applied, seq, complete}, KEYS[2] dirty zset,
-- KEYS[2+i] the state hash {p, f, t, ff} of update i's url.
-- ARGV[1] the caller's epoch, ARGV[2] the offset after the batch, ARGV[3] "1"
-- when base states from PostgreSQL follow each update, ARGV[4] the length of
-- the state key prefix (the rest of a key is the url). Then per update: emit
-- mode ("c" if changed, "a" always, "n" never), pubDate, fetchTime, text and,
-- with bases, the base: kind ("" none, "-" absent, "+" present), p, f, t, ff.
--
-- Numbers are fixed-width 20-digit decimal strings: Lua numbers are doubles,
-- and equal-width digit strings order like the integers they spell.
local meta, dirty = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  return redis.error_reply('DXLOST partition state is gone from Redis')
end
if epoch ~= ARGV[1] then
  return redis.error_reply('DXFENCED partition epoch is ' .. epoch .. ', caller has ' .. ARGV[1])
end

local withBase = ARGV[3] == '1'
local prefixLen = tonumber(ARGV[4])
local stride = withBase and 9 or 4
local n = #KEYS - 2
local complete = redis.call('HGET', meta, 'complete') == '1'

-- bytesGreater compares like Go's a > b on strings; Lua's own comparison
-- follows the server's locale.
local function bytesGreater(a, b)
  for j = 1, math.min(#a, #b) do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- Load every url's state once. A missing key is a new url only when the
-- cache is complete or the caller brought the base from PostgreSQL;
-- otherwise the caller must read through first.
local states, cacheOnly, missing = {}, {}, {}
for i = 1, n do
  local key = KEYS[2 + i]
  if states[key] == nil then
    local v = redis.call('HMGET', key, 'p', 'f', 't', 'ff')
    local a = 4 + (i - 1) * stride
    if v[1] then
      states[key] = v
    elseif complete then
      states[key] = false
    elseif withBase and ARGV[a + 5] == '+' then
      states[key] = {ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]}
      cacheOnly[#cacheOnly + 1] = key
    elseif withBase and ARGV[a + 5] == '-' then
      states[key] = false
    else
      states[key] = false
      missing[#missing + 1] = i - 1
    end
  end
end
if #missing > 0 then
  return {'miss', missing}
end

local emitted, unchanged, changedKeys, isChanged = {}, 0, {}, {}
for i = 1, n do
  local key = KEYS[2 + i]
  local a = 4 + (i - 1) * stride
  local mode, p, f, t = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local s = states[key]
  local changed = false
  if not s then
    s = {p, f, t, f}
    states[key] = s
    changed = true
  else
    if f > s[2] or (f == s[2] and t ~= s[3] and bytesGreater(t, s[3])) then
      s[2], s[3] = f, t
      changed = true
    end
    if f < s[4] or (f == s[4] and p < s[1]) then
      s[4], s[1] = f, p
      changed = true
    end
  end
  if changed then
    if not isChanged[key] then
      isChanged[key] = true
      changedKeys[#changedKeys + 1] = key
    end
  else
    unchanged = unchanged + 1
  end
  if mode == 'a' or (mode == 'c' and changed) then
    -- The text travels back only when it is not the update's own.
    local text = false
    if s[3] ~= t then text = s[3] end
    emitted[#emitted + 1] = {i - 1, s[1], s[2], s[4], text}
  end
end

if #changedKeys > 0 then
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  for _, key in ipairs(changedKeys) do
    local s = states[key]
    redis.call('HSET', key, 'p', s[1], 'f', s[2], 't', s[3], 'ff', s[4])
    redis.call('PERSIST', key) -- dirty keys never expire
    redis.call('ZADD', dirty, seq, string.sub(key, prefixLen + 1))
  end
end
-- States read through from PostgreSQL and left unchanged are cached clean.
for _, key in ipairs(cacheOnly) do
  if not isChanged[key] then
    local s = states[key]
    redis.call('HSET', key, 'p', s[1], 'f', s[2], 't', s[3], 'ff', s[4])
  end
end

local applied = tonumber(redis.call('HGET', meta, 'applied') or '-1')
if tonumber(ARGV[2]) > applied then
  redis.call('HSET', meta, 'applied', ARGV[2])
end
return {'ok', unchanged, emitted}
