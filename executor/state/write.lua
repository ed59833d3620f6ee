-- Writes one batch of a partition (fence.lua runs first): the states the
-- leader merged, their urls in the dirty set, the states it read from
-- PostgreSQL and left unchanged (cached clean), the applied offset and, when
-- given, the batch's output. Nothing here parses or compares a state: the
-- leader merged them (document.Merge).
--
-- KEYS[1] meta hash, KEYS[2] dirty set, KEYS[3] recorded outputs (hash of
-- offset → output); then, for each written state, its numbers key and its
-- text key; then the same for each cached state.
-- ARGV[1] the caller's epoch, ARGV[2] the offset after the batch, ARGV[3]
-- the applied offset as the caller last left it ("" for none), ARGV[4] the
-- input topic's partition count now ("" when not read), ARGV[5] the TTL in
-- seconds of clean states (0: none), ARGV[6] how many states are written,
-- ARGV[7] how many cached, ARGV[8] the batch's output ("" for none), ARGV[9]
-- the offset up to which recorded outputs are published ("" for none). Then
-- per written state: url, numbers, "1" when its text is written (else it is
-- unchanged), text; per cached state: numbers, text.
local meta, dirty, out = KEYS[1], KEYS[2], KEYS[3]

-- The caller is the partition's only writer (fence.lua): the applied offset
-- is as it last left it, or this batch's when a retry follows a call whose
-- reply was lost. Anything else means Redis went back in time within the
-- epoch (a restore of an older snapshot, a promoted replica that lagged):
-- its states miss updates the caller applied and published.
local applied = redis.call('HGET', meta, 'applied') or ''
if applied ~= ARGV[3] and applied ~= ARGV[2] then
  redis.call('HSET', meta, 'stale', '1') -- for the claim that recovers
  return redis.error_reply('DXSTALE the applied offset is "' .. applied .. '", the caller last saw "' .. ARGV[3] .. '"')
end

-- A complete copy (claim.lua) stays complete only while the topic keeps
-- its partition count: once it changed, urls with history elsewhere move
-- in, and it never is again.
local completeFor = redis.call('HGET', meta, 'complete')
if completeFor and completeFor ~= ARGV[4] then
  redis.call('HDEL', meta, 'complete')
end

local ttl = tonumber(ARGV[5])
local written, cached = tonumber(ARGV[6]), tonumber(ARGV[7])
local CHUNK = 1000 -- arguments per call, well below Lua's unpack limit

-- Written states are dirty: SET drops any TTL, and a text kept as it was
-- loses the TTL it had as a clean state.
local kv, urls = {}, {}
local a = 9
for i = 1, written do
  local numbers, text = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  kv[#kv + 1] = numbers
  kv[#kv + 1] = ARGV[a + 2]
  if ARGV[a + 3] == '1' then
    kv[#kv + 1] = text
    kv[#kv + 1] = ARGV[a + 4]
  elseif ttl > 0 then
    redis.call('PERSIST', text)
  end
  urls[#urls + 1] = ARGV[a + 1]
  a = a + 4
  if #kv >= CHUNK then
    redis.call('MSET', unpack(kv))
    kv = {}
  end
end
if #kv > 0 then
  redis.call('MSET', unpack(kv))
end
for from = 1, #urls, CHUNK do
  redis.call('SADD', dirty, unpack(urls, from, math.min(from + CHUNK - 1, #urls)))
end

-- States read from PostgreSQL and left unchanged are cached clean.
local k = 3 + 2 * written
for j = 1, cached do
  if ttl > 0 then
    redis.call('SET', KEYS[k + 1], ARGV[a + 1], 'EX', ttl)
    redis.call('SET', KEYS[k + 2], ARGV[a + 2], 'EX', ttl)
  else
    redis.call('SET', KEYS[k + 1], ARGV[a + 1])
    redis.call('SET', KEYS[k + 2], ARGV[a + 2])
  end
  k = k + 2
  a = a + 2
end

-- The applied offset never goes back (a replay re-applies lower offsets):
-- everything below it is applied.
if applied == '' or tonumber(ARGV[2]) > tonumber(applied) then
  redis.call('HSET', meta, 'applied', ARGV[2])
end

-- The batch's output, kept until Kafka committed it (exactly-once
-- recovery publishes what is left); outputs published already go.
if ARGV[8] ~= '' then
  redis.call('HSET', out, ARGV[2], ARGV[8])
end
if ARGV[9] ~= '' then
  local upTo = tonumber(ARGV[9])
  for _, offset in ipairs(redis.call('HKEYS', out)) do
    if tonumber(offset) <= upTo then
      redis.call('HDEL', out, offset)
    end
  end
end
return redis.status_reply('OK')
