-- Merges one batch of updates into a partition's state: the Redis copy of
-- document.Merge (executor/document), checked against the same cases.
-- (fence.lua runs first.)
--
-- KEYS[1] meta hash {epoch, applied, complete}, KEYS[2] the dirty set,
-- KEYS[2+i] the state of update i's url: a string holding pubDate,
-- fetchTime and firstFetchTime as 20-digit decimals, then the text.
-- ARGV[1] the caller's epoch, ARGV[2] the offset after the batch, ARGV[3] "1"
-- when base states from PostgreSQL follow each update, ARGV[4] the length of
-- the state key prefix (the rest of a key is the url), ARGV[5] the TTL in
-- seconds of clean states (0: none), ARGV[6] the applied offset as the
-- caller last left it ("" for none), ARGV[7] the input topic's partition
-- count now (read when the partition may be complete). Then per update:
-- emit mode ("c" if changed, "a" always, "n" never), pubDate, fetchTime,
-- text and, with bases, the base: kind ("-" absent from PostgreSQL, "+"
-- present, "" not looked up), p, f, t, ff.
--
-- Numbers are fixed-width digit strings: Lua numbers are doubles, and
-- equal-width digit strings order like the integers they spell. Redis is
-- called a few times per batch, not per update: that is what makes a batch
-- cheap.
local meta, dirty = KEYS[1], KEYS[2]

-- The caller is the partition's only writer (fence.lua): the applied offset
-- is as it last left it, or this batch's when a retry follows a call whose
-- reply was lost. Anything else means Redis went back in time within the
-- epoch (a restore of an older snapshot, a promoted replica that lagged):
-- its states miss updates the caller applied and published.
local applied = redis.call('HGET', meta, 'applied') or ''
if applied ~= ARGV[6] and applied ~= ARGV[2] then
  redis.call('HSET', meta, 'stale', '1') -- for the claim that recovers
  return redis.error_reply('DXSTALE the applied offset is "' .. applied .. '", the caller last saw "' .. ARGV[6] .. '"')
end

local withBase = ARGV[3] == '1'
local prefixLen = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local stride = withBase and 9 or 4
local n = #KEYS - 2
-- A complete copy (claim.lua) stays complete only while the topic keeps
-- its partition count: once it changed, urls with history elsewhere move
-- in, and it never is again.
local completeFor = redis.call('HGET', meta, 'complete')
local complete = completeFor and completeFor == ARGV[7]
if completeFor and not complete then
  redis.call('HDEL', meta, 'complete')
end
local CHUNK = 1000 -- arguments per call, well below Lua's unpack limit

-- bytesGreater compares like Go's a > b on strings; Lua's own comparison
-- follows the server's locale.
local function bytesGreater(a, b)
  for j = 1, math.min(#a, #b) do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- Read every distinct url's state with MGET. A state is {p, f, ff, t, raw}:
-- the text is cut out of raw only when needed.
local distinct, seen = {}, {}
for i = 1, n do
  local key = KEYS[2 + i]
  if not seen[key] then
    seen[key] = true
    distinct[#distinct + 1] = key
  end
end
local stored = {}
for from = 1, #distinct, CHUNK do
  local values = redis.call('MGET', unpack(distinct, from, math.min(from + CHUNK - 1, #distinct)))
  for j, v in ipairs(values) do
    stored[distinct[from + j - 1]] = v
  end
end

-- A missing key is a new url only when the cache is complete or the caller
-- brought the base from PostgreSQL; otherwise the caller must read through.
local states, cacheOnly, missing = {}, {}, {}
for i = 1, n do
  local key = KEYS[2 + i]
  if states[key] == nil then
    local v = stored[key]
    local a = 7 + (i - 1) * stride
    if v then
      states[key] = {string.sub(v, 1, 20), string.sub(v, 21, 40), string.sub(v, 41, 60), nil, v}
    elseif complete then
      states[key] = false
    elseif withBase and ARGV[a + 5] == '+' then
      states[key] = {ARGV[a + 6], ARGV[a + 7], ARGV[a + 9], ARGV[a + 8]}
      cacheOnly[#cacheOnly + 1] = key
    elseif withBase and ARGV[a + 5] == '-' then
      states[key] = false
    else -- not looked up, or (with a TTL) expired since

      states[key] = false
      missing[#missing + 1] = i - 1
    end
  end
end
if #missing > 0 then
  return {'miss', missing}
end

local function text(s)
  if not s[4] then s[4] = string.sub(s[5], 61) end
  return s[4]
end

local emitted, unchanged, changedKeys, isChanged = {}, 0, {}, {}
for i = 1, n do
  local key = KEYS[2 + i]
  local a = 7 + (i - 1) * stride
  local mode, p, f, t = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local s = states[key]
  local changed = false
  if not s then
    s = {p, f, f, t}
    states[key] = s
    changed = true
  else
    if f > s[2] or (f == s[2] and t ~= text(s) and bytesGreater(t, text(s))) then
      s[2], s[4] = f, t
      changed = true
    end
    if f < s[3] or (f == s[3] and p < s[1]) then
      s[3], s[1] = f, p
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
    local back = false
    if text(s) ~= t then back = text(s) end
    emitted[#emitted + 1] = {i - 1, s[1], s[2], s[3], back}
  end
end

local function encode(s)
  return s[1] .. s[2] .. s[3] .. text(s)
end

if #changedKeys > 0 then
  -- SET without KEEPTTL drops any TTL: dirty states never expire.
  for from = 1, #changedKeys, CHUNK / 2 do
    local kv, urls = {}, {}
    for j = from, math.min(from + CHUNK / 2 - 1, #changedKeys) do
      local key = changedKeys[j]
      kv[#kv + 1] = key
      kv[#kv + 1] = encode(states[key])
      urls[#urls + 1] = string.sub(key, prefixLen + 1)
    end
    redis.call('MSET', unpack(kv))
    redis.call('SADD', dirty, unpack(urls))
  end
end
-- States read through from PostgreSQL and left unchanged are cached clean.
for _, key in ipairs(cacheOnly) do
  if not isChanged[key] then
    if ttl > 0 then
      redis.call('SET', key, encode(states[key]), 'EX', ttl)
    else
      redis.call('SET', key, encode(states[key]))
    end
  end
end

-- The applied offset never goes back (a replay re-applies lower offsets):
-- everything below it is applied.
if applied == '' or tonumber(ARGV[2]) > tonumber(applied) then
  redis.call('HSET', meta, 'applied', ARGV[2])
end
return {'ok', unchanged, emitted}
