-- Add a batch's events and fraud labels to one terminal, prune it, count windows.
--
-- KEYS: the terminal's hash, events, labels, frauds, customers, latest and latest_txn keys
-- (layout.terminal_keys).
-- ARGV: now_ms, horizon_ms (what a window reaches back plus the allowed lateness), ttl_s, the
-- transactions' low watermark (ms), the recount page (customers at most), the number of events
-- E, then E quadruples (txn_id, ts_ms, customer_id, 1 to count this transaction's windows else
-- 0), then (txn_id, ts_ms) pairs of fraud labels that count. With no events and no labels, the
-- call only goes on with a pending recount.
--
-- Every step is O(log n) in the terminal's events or O(what it removes): ZADD by member
-- (idempotent: a replay changes nothing), a fraud is an event with a label whichever came
-- first, the prune is ZREMRANGEBYSCORE behind the low watermark, each window edge a ZCOUNT.
-- An item older than the newest event by the 7-day delay (a lagging partition, a late label)
-- changes the stored windows of the transactions 7 to 37 days after it: only a customer's
-- newest transaction has stored windows, so the range is added to the pending recount
-- (_recount_after.._recount_through over :latest), and each call counts at most a page of it.
--
-- Monotone against a stale or replaying writer (see writer.py): the newest event time, the
-- last write time, the write counter, the prune cut-off and the newest time dropped only move
-- forward; an event or label at or before the last prune's cut-off is not added back (its
-- windows are gone; a label there never finds its event); a prune with an older low
-- watermark than the last one does nothing.
--
-- Returns {seq, dropped, pending (1 if a recount is left for the next call), skipped (items
-- behind the prune), then per counted transaction: txn_id, ts_ms, customer_id and the six
-- counts (events, frauds per window)}; seq is the terminal's write counter after this call,
-- dropped the newest time a prune ever deleted.
local hash, events, labels, frauds, customers, latest, latest_txn =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local now, horizon, ttl, low = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local page = tonumber(ARGV[5])
local first_label = 7 + 4 * tonumber(ARGV[6])
local function text(number) return string.format('%.0f', number) end
local function after_id(a, b) return id_before(b, a) end

local stored = redis.call(
  'HMGET', hash, EVENT_TS, PRUNED_AT, SEQ, DROPPED, UPDATED_AT, RECOUNT_AFTER, RECOUNT_THROUGH)
local newest = tonumber(stored[1] or '0')
local pruned = tonumber(stored[2] or '0')
local dropped = tonumber(stored[4] or '0')
local updated = math.max(tonumber(stored[5] or '0'), now)
local recount_after, recount_through = tonumber(stored[6] or ''), tonumber(stored[7] or '')

local skipped = 0
local added = {}  -- the times of the items this call added (a late one reaches stored windows)
for i = 7, first_label - 1, 4 do
  local txn, ts, customer = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if ts <= pruned then
    skipped = skipped + 1
  else
    redis.call('ZADD', events, ts, txn)
    redis.call('HSET', customers, txn, customer)
    if redis.call('ZSCORE', labels, txn) then redis.call('ZADD', frauds, ts, txn) end
    -- the customer's newest transaction here, by (ts, txn_id)
    local known = tonumber(redis.call('ZSCORE', latest, customer) or '-1')
    if ts > known or (ts == known and after_id(txn, redis.call('HGET', latest_txn, customer))) then
      redis.call('ZADD', latest, ts, customer)
      redis.call('HSET', latest_txn, customer, txn)
    end
    if ts > newest then newest = ts end
    table.insert(added, ts)
  end
end
for i = first_label, #ARGV, 2 do
  local txn, ts = ARGV[i], tonumber(ARGV[i + 1])
  if ts <= pruned then
    skipped = skipped + 1
  else
    redis.call('ZADD', labels, ts, txn)
    local event_ts = redis.call('ZSCORE', events, txn)
    if event_ts then redis.call('ZADD', frauds, event_ts, txn) end
    table.insert(added, ts)
  end
end

local seq
if #added > 0 or recount_after then
  redis.call('HSET', hash, EVENT_TS, text(newest), UPDATED_AT, text(updated))
  if not stored[3] then
    -- a new terminal (or one that expired): its counter starts above any earlier one's
    redis.call('HSET', hash, SEQ, text(now) .. '000')
  end
  seq = redis.call('HINCRBY', hash, SEQ, 1)
else
  seq = tonumber(stored[3] or '0')
end

-- prune what no window can reach: behind the terminal's newest event and the low watermark,
-- once the cut-off has moved an hour (of event time) since the last prune, so that most calls
-- skip it and none removes more than an hour's events of a terminal that keeps up
local cutoff = math.min(newest, low) - horizon
if #added > 0 and cutoff - pruned > PRUNE_EVERY_MS then
  local bound = text(cutoff)
  local gone = redis.call('ZRANGEBYSCORE', events, '-inf', bound, 'WITHSCORES')
  if #gone > 0 then
    -- ascending: the last score is the newest event time dropped
    dropped = math.max(dropped, tonumber(gone[#gone]))
    local ids = {}
    for i = 1, #gone, 2 do table.insert(ids, gone[i]) end
    for i = 1, #ids, 1000 do
      redis.call('HDEL', customers, unpack(ids, i, math.min(i + 999, #ids)))
    end
    redis.call('ZREMRANGEBYSCORE', events, '-inf', bound)
    redis.call('ZREMRANGEBYSCORE', frauds, '-inf', bound)  -- a fraud is an event
  end
  local left = redis.call('ZRANGEBYSCORE', latest, '-inf', bound)
  for i = 1, #left, 1000 do
    redis.call('HDEL', latest_txn, unpack(left, i, math.min(i + 999, #left)))
  end
  redis.call('ZREMRANGEBYSCORE', latest, '-inf', bound)
  local label = redis.call('ZREVRANGEBYSCORE', labels, bound, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #label > 0 then
    dropped = math.max(dropped, tonumber(label[2]))
    redis.call('ZREMRANGEBYSCORE', labels, '-inf', bound)
  end
  redis.call('HSET', hash, PRUNED_AT, bound, DROPPED, text(dropped))
end
if #added > 0 then
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
end

-- the transactions whose windows to count: those asked for, and a page of the recount
local wanted, order = {}, {}
local function want(txn, ts, customer)
  if not wanted[txn] then table.insert(order, txn) end
  wanted[txn] = {ts, customer}
end
local function want_latest(customer, ts)
  local txn = redis.call('HGET', latest_txn, customer)
  if txn then want(txn, ts, customer) end
end
for i = 7, first_label - 1, 4 do
  if ARGV[i + 3] == '1' and tonumber(ARGV[i + 1]) > pruned then
    want(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
end
-- an item at ts is in the windows of the transactions at ts + 7 d through ts + 37 d - 1 ms
local reaching = newest - DELAY_MS
local longest = REACHES_MS[#REACHES_MS]
for _, ts in ipairs(added) do
  if ts <= reaching then
    local after, through = ts + DELAY_MS - 1, ts + longest - 1
    recount_after = recount_after and math.min(recount_after, after) or after
    recount_through = recount_through and math.max(recount_through, through) or through
  end
end
local pending = 0
if recount_after then
  local hits = redis.call(
    'ZRANGEBYSCORE', latest, '(' .. text(recount_after), text(recount_through), 'WITHSCORES',
    'LIMIT', 0, page)
  local last_score
  if #hits >= 2 * page then
    -- a full page: stop before its last time, then take every customer at that time, so the
    -- next page starts after it whatever the ties
    last_score = hits[#hits]
    local ties = redis.call('ZRANGEBYSCORE', latest, last_score, last_score)
    for j = 1, #hits, 2 do
      if hits[j + 1] ~= last_score then want_latest(hits[j], hits[j + 1]) end
    end
    for _, customer in ipairs(ties) do want_latest(customer, last_score) end
  else
    for j = 1, #hits, 2 do want_latest(hits[j], hits[j + 1]) end
  end
  if last_score and tonumber(last_score) < recount_through then
    redis.call('HSET', hash, RECOUNT_AFTER, last_score, RECOUNT_THROUGH, text(recount_through))
    pending = 1
  else
    redis.call('HDEL', hash, RECOUNT_AFTER, RECOUNT_THROUGH)
  end
end

local reply = {seq, text(dropped), pending, skipped}
for _, txn in ipairs(order) do
  local ts, customer = tonumber(wanted[txn][1]), wanted[txn][2]
  table.insert(reply, txn)
  table.insert(reply, text(ts))
  table.insert(reply, customer)
  local through = text(ts - DELAY_MS)
  for _, reach_ms in ipairs(REACHES_MS) do
    local after = '(' .. text(ts - reach_ms)
    table.insert(reply, redis.call('ZCOUNT', events, after, through))
    table.insert(reply, redis.call('ZCOUNT', frauds, after, through))
  end
end
return reply
