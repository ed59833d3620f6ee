-- Starts a sync pass (fence.lua runs first): the urls dirty so far move to
-- the syncing set, and the applied offset read in the same step bounds them:
-- every change below it is in the syncing set, every later change goes to
-- the dirty set. A url changed again during the pass is in both, so the
-- next pass syncs it again. Urls left over from a failed pass stay.
--
-- KEYS[1] meta, KEYS[2] dirty set, KEYS[3] syncing set. Returns {applied
-- offset or false, urls to sync}.
local meta, dirty, syncing = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', dirty) == 1 then
  if redis.call('EXISTS', syncing) == 1 then
    redis.call('SUNIONSTORE', syncing, syncing, dirty)
    redis.call('DEL', dirty)
  else
    redis.call('RENAME', dirty, syncing)
  end
end
return {redis.call('HGET', meta, 'applied') or false, redis.call('SCARD', syncing)}
