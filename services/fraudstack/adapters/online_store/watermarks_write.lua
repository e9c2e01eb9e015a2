-- Publish partitions' newest event times read, each only by its owner and only forward.
--
-- KEYS[1] the watermarks hash, KEYS[2] the owners hash (one slot: layout.owners_key). ARGV:
-- (partition, ts_ms, epoch) triples. A partition whose owner epoch is newer than the writer's
-- is refused (it moved: its batch was written, if at all, by a stale writer whose watermark
-- could let a prune cut into windows the new owner still replays); otherwise the published
-- time becomes the greater of the two (a replay reads older times again; the low watermark
-- never moves back). Returns the number of partitions refused.
local refused = 0
for i = 1, #ARGV, 3 do
  local partition, ts, epoch = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local owner = tonumber(redis.call('HGET', KEYS[2], partition) or '0')
  if owner > epoch then
    refused = refused + 1
  elseif ts > tonumber(redis.call('HGET', KEYS[1], partition) or '-1') then
    redis.call('HSET', KEYS[1], partition, string.format('%.0f', ts))
  end
end
return refused
