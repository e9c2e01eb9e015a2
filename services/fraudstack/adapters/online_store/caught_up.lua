-- Mark partitions replayed to their end in this life of the store; the store is ready once every
-- partition is.
--
-- KEYS[1] the store's generation marker (layout.STORE_KEY). ARGV[1] the generation the replay
-- was made for, then the partitions' names ("<topic>:<partition>"). A marker of another
-- generation (the store was lost again since) takes nothing. Returns 1 if the store is ready
-- now, 0 if partitions are still replaying, -1 if the generation is not the store's.
if redis.call('HGET', KEYS[1], GENERATION) ~= ARGV[1] then return -1 end
for i = 2, #ARGV do redis.call('HSET', KEYS[1], CAUGHT_UP_PREFIX .. ARGV[i], 1) end
if redis.call('HEXISTS', KEYS[1], READY) == 1 then return 1 end
local wanted = tonumber(redis.call('HGET', KEYS[1], PARTITIONS) or '0')
local done = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #CAUGHT_UP_PREFIX) == CAUGHT_UP_PREFIX then done = done + 1 end
end
if wanted > 0 and done >= wanted then
  redis.call('HSET', KEYS[1], READY, 1)
  return 1
end
return 0
