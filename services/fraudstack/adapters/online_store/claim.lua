-- Claim partitions for an instance: a new ownership epoch, above every earlier one.
--
-- KEYS[1] the owners hash (layout.owners_key). ARGV: the partitions assigned to the instance.
-- Bumps the epoch counter and records it as each partition's owner epoch; returns the epoch.
-- Called when the consumer group assigns partitions, before any batch of them is written: from
-- then on a write carrying an older epoch of these partitions is refused (customer_write.lua,
-- watermarks_write.lua).
local epoch = redis.call('HINCRBY', KEYS[1], EPOCH_COUNTER, 1)
for i = 1, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], epoch) end
return epoch
