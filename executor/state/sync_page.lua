-- Reads the states of some syncing urls (fence.lua runs first, so a wiped
-- or lost partition cannot pass for a synced one).
--
-- KEYS[1] meta, KEYS[2] syncing set, KEYS[2+i] the state of url i.
-- Returns {urls left in the syncing set, the states}.
local states = {}
for i = 3, #KEYS, 1000 do
  local values = redis.call('MGET', unpack(KEYS, i, math.min(i + 999, #KEYS)))
  for _, v in ipairs(values) do
    if not v then
      -- Dirty states never expire: only eviction under maxmemory removes one.
      return redis.error_reply('DXLOST a dirty state is missing (evicted? docexec needs maxmemory-policy noeviction)')
    end
    states[#states + 1] = v
  end
end
return {redis.call('SCARD', KEYS[2]), states}
