-- Claim partitions for an instance: a new ownership epoch, above every earlier one.
--
-- KEYS[1] the owners hash (layout.owners_key). ARGV: the partitions assigned to the instance.
-- Bumps the epoch counter and records it as each partition's owner epoch; returns the epoch.
-- Called when the consumer group assigns partitions, before any batch of them is written: from
-- then on a write carrying an older epoch of these partitions is refused (customer_write.lua,
-- watermarks_write.lua).
--
-- The counter never goes below the server's clock in milliseconds: a Redis that came back empty
-- has lost the counter, and an epoch counted from 1 again would be older than what a stalled
-- writer claimed before the loss. Claimed later, an epoch is larger, whatever was lost (the
-- counter runs ahead of the clock only with more than one claim a millisecond).
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('HINCRBY', KEYS[1], EPOCH_COUNTER, 1)
if epoch < floor then
  epoch = floor
  redis.call('HSET', KEYS[1], EPOCH_COUNTER, string.format('%.0f', epoch))
end
for i = 1, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], string.format('%.0f', epoch)) end
return epoch
