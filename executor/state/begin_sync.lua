-- Starts a sync pass (fence.lua runs first): the urls dirty so far move to
-- the syncing hash, and the applied offset read in the same step bounds
-- them: every change below it is in the syncing hash, every later change
-- goes to the dirty hash. A url changed again during the pass is in both,
-- so the next pass syncs it again. Urls left over from a failed pass stay
-- (with the newer size of their text when dirty again).
--
-- KEYS[1] meta, KEYS[2] dirty hash, KEYS[3] syncing hash (url → the size
-- of its text). Returns {applied offset or false, urls to sync}.
local meta, dirty, syncing = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', dirty) == 1 then
  if redis.call('EXISTS', syncing) == 1 then
    local cursor = '0'
    repeat
      local step = redis.call('HSCAN', dirty, cursor, 'COUNT', 500)
      cursor = step[1]
      -- HSCAN may return more than asked (miniredis: the whole hash), and
      -- unpack has a limit: field-value pairs in slices of 500.
      local fields = step[2]
      for i = 1, #fields, 1000 do
        redis.call('HSET', syncing, unpack(fields, i, math.min(i + 999, #fields)))
      end
    until cursor == '0'
    redis.call('DEL', dirty)
  else
    redis.call('RENAME', dirty, syncing)
  end
end
return {redis.call('HGET', meta, 'applied') or false, redis.call('HLEN', syncing)}
