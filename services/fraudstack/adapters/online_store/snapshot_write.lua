-- Store the terminal windows of one transaction in its customer's hash.
--
-- KEYS[1] the customer hash. ARGV: txn_id, ts_ms, seq, the encoded snapshot, the key's TTL (s),
-- set if the key had none (a recount may come before the owner's first write), the writer's
-- ownership epoch of the customer's partition or -1 (a recount for another partition's
-- customer: not fenced). A writer whose epoch is older than the hash's _epoch lost the
-- partition (see customer_write.lua) and is refused: returns 2. Otherwise stores the
-- snapshot unless the customer has a newer transaction (by (ts, txn_id)), the stored snapshot is
-- of a newer one, or it is of this one counted at the same or a later terminal seq. A
-- transaction not written to the customer yet is accepted: another instance's recount may come
-- before the owner's write. Returns 1 if stored, else 0.
local txn, ts, seq = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local epoch = tonumber(ARGV[6] or '-1')
if epoch >= 0 and tonumber(redis.call('HGET', KEYS[1], EPOCH) or '0') > epoch then return 2 end
-- this write's transaction before (other_ts, other)
local function before(other, other_ts) return txn_before(txn, ts, other, other_ts) end
local last = redis.call('HGET', KEYS[1], LAST_TXN)
if last then
  local id, last_ts = string.match(last, '^([^:]*):(%d+):')
  if before(id, tonumber(last_ts)) then return 0 end
end
local current = redis.call('HGET', KEYS[1], TERMINAL_SNAPSHOT)
if current then
  local id, current_ts, current_seq = string.match(current, '^([^:]*):(%d+):(%d+)')
  if not id then
    -- a layout this script does not know: replaced
  elseif id == txn then
    if tonumber(current_seq) >= seq then return 0 end
  elseif before(id, tonumber(current_ts)) then
    return 0
  end
end
redis.call('HSET', KEYS[1], TERMINAL_SNAPSHOT, ARGV[4])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
return 1
