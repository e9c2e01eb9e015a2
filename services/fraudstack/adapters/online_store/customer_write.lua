-- Write a customer's new events and, unless its hash holds a newer transaction, the features of
-- its newest transaction.
--
-- KEYS[1] the customer hash. ARGV: ttl_s, the newest transaction's txn_id and ts_ms, the number
-- of event field/value pairs E, the number of expired event fields X, the writer's ownership
-- epoch of the customer's partition, then the E pairs, the X field names, then the summary's
-- field/value pairs (_last_txn, its packed customer features, _event_ts, _updated_at).
--
-- The fence: the hash keeps the epoch of its last writer (_epoch); a writer with an older one
-- lost the customer's partition to the instance that wrote it (epochs are bumped on every
-- assignment, see claim.lua) and is refused whole: no event, no deletion, no summary, so a
-- stalled instance that finishes an old batch can neither put an older transaction back nor
-- overwrite the newest one's features with its own older history (the same transaction, a late
-- event short), nor delete events by its own horizon.
-- Then events are facts, one field per transaction id (idempotent), and the expired ones
-- deleted; the summary is also newer-wins: written only if the stored _last_txn is not newer by
-- (ts, txn_id). Returns 1 if all was written, 0 if the writer was fenced off, 2 if only the
-- summary was refused (older than the stored one).
local key = KEYS[1]
local txn, ts = ARGV[2], tonumber(ARGV[3])
local epoch = tonumber(ARGV[6])
local first_expired = 7 + 2 * tonumber(ARGV[4])
local first_summary = first_expired + tonumber(ARGV[5])

local fence = tonumber(redis.call('HGET', key, EPOCH) or '0')
if fence > epoch then return 0 end
-- a hash of the layout before the packed features: their fields, one per feature, go
if redis.call('HEXISTS', key, RETIRED_FEATURES[1]) == 1 then
  redis.call('HDEL', key, unpack(RETIRED_FEATURES))
end

-- this write's transaction before (other_ts, other)
local function before(other, other_ts) return txn_before(txn, ts, other, other_ts) end

-- in slices: Lua unpacks a few thousand values at most
for i = 7, first_expired - 1, 1000 do
  redis.call('HSET', key, unpack(ARGV, i, math.min(i + 999, first_expired - 1)))
end
for i = first_expired, first_summary - 1, 1000 do
  redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 999, first_summary - 1)))
end
local written = 2
local last = redis.call('HGET', key, LAST_TXN)
local id, last_ts
if last then id, last_ts = string.match(last, '^([^:]*):(%d+):') end
if not id or not before(id, tonumber(last_ts)) then
  redis.call('HSET', key, unpack(ARGV, first_summary))
  written = 1
end
if epoch > fence then redis.call('HSET', key, EPOCH, ARGV[6]) end
redis.call('EXPIRE', key, ARGV[1])
return written
