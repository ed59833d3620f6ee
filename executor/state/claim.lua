-- Makes the caller the partition's only writer: the epoch becomes one more
-- than both the stored epoch and ARGV[1] (the highest epoch PostgreSQL has
-- seen, which survives a Redis wipe), so every older writer's next call is
-- refused. A non-empty ARGV[2] marks a partition that starts from nothing:
-- its Redis copy is complete and a missing key means a new url, for as long
-- as the input topic keeps ARGV[2] partitions (urls move between partitions
-- when it grows). ARGV[3] is the layout of the keys (state.go): a
-- partition kept in another is to be forgotten.
--
-- KEYS[1] meta hash. Returns {epoch, applied offset or false, the partition
-- count completeness holds for or false, and, each or false, the marks a
-- recovery leaves: forgetting (forget.lua did not finish, or another
-- layout), stale (Redis went back in time) and replay (the offset up to
-- which a recovery publishes every current state)}.
local meta = KEYS[1]
local stored = tonumber(redis.call('HGET', meta, 'epoch') or '0')
local floor = tonumber(ARGV[1])
local epoch = math.max(stored, floor) + 1
if stored == 0 and ARGV[2] ~= '' then
  redis.call('HSET', meta, 'complete', ARGV[2])
end
if stored > 0 and redis.call('HGET', meta, 'format') ~= ARGV[3] then
  redis.call('HSET', meta, 'forgetting', '1')
end
redis.call('HSET', meta, 'epoch', string.format('%d', epoch), 'format', ARGV[3])
local function get(field) return redis.call('HGET', meta, field) or false end
return {string.format('%d', epoch), get('applied'), get('complete'), get('forgetting'), get('stale'), get('replay')}
