-- Reads the states of some syncing urls (fence.lua runs first, so a wiped
-- or lost partition cannot pass for a synced one), in order, until their
-- texts reach a byte bound: a page of large documents stays small.
--
-- KEYS[1] meta, KEYS[2] syncing set, then the numbers keys of the urls,
-- then their text keys, in the same order. ARGV[2] the most bytes of texts
-- to return (the state that crosses it included; 0 for no bound). Returns
-- {urls left in the syncing set, the numbers, the texts} of the first urls.
local n = (#KEYS - 2) / 2
local bound = tonumber(ARGV[2])
local numbers, texts = {}, {}
local bytes = 0
for from = 3, 2 + n, 1000 do
  local to = math.min(from + 999, 2 + n)
  local ns = redis.call('MGET', unpack(KEYS, from, to))
  local ts = redis.call('MGET', unpack(KEYS, from + n, to + n))
  for i = 1, #ns do
    if not ns[i] or not ts[i] then
      -- Dirty states never expire: only eviction removes one.
      return redis.error_reply('DXLOST a dirty state is missing (evicted? docexec needs a maxmemory-policy that keeps keys without a TTL)')
    end
    numbers[#numbers + 1] = ns[i]
    texts[#texts + 1] = ts[i]
    bytes = bytes + #ts[i]
    if bound > 0 and bytes >= bound then
      return {redis.call('SCARD', KEYS[2]), numbers, texts}
    end
  end
end
return {redis.call('SCARD', KEYS[2]), numbers, texts}
