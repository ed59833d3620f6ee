-- Forgets a partition's states (fence.lua runs first), in steps, because
-- its state keys need a SCAN to be found. ARGV[2] is the step:
--   "begin": mark the meta hash `forgetting` (a claim that finds the mark
--            forgets again: half-forgotten states must not be trusted),
--            drop the dirty and syncing hashes, the applied offset and
--            completeness; the epoch stays;
--   "keys":  unlink KEYS[4..] (state keys of the partition, one slot);
--   "end":   drop the mark.
--
-- KEYS[1] meta, KEYS[2] dirty hash, KEYS[3] syncing hash.
local step = ARGV[2]
if step == 'begin' then
  redis.call('HSET', KEYS[1], 'forgetting', '1')
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HDEL', KEYS[1], 'applied', 'complete')
elseif step == 'keys' then
  for i = 4, #KEYS, 1000 do
    redis.call('UNLINK', unpack(KEYS, i, math.min(i + 999, #KEYS)))
  end
elseif step == 'end' then
  redis.call('HDEL', KEYS[1], 'forgetting')
end
return redis.status_reply('OK')
