-- Forgets a partition's states (fence.lua runs first): the dirty and
-- syncing sets and the applied offset go, the epoch stays. The caller
-- deleted the state keys themselves (they need a SCAN).
--
-- KEYS[1] meta, KEYS[2] dirty set, KEYS[3] syncing set.
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[1], 'applied', 'complete')
return redis.status_reply('OK')
