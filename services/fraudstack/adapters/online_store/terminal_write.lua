-- Add a batch's events and fraud labels to one terminal, prune it, count windows.
--
-- KEYS: the terminal's hash, events, labels, frauds and customers keys (layout.terminal_keys).
-- ARGV: now_ms, horizon_ms (what a window reaches back plus the allowed lateness), ttl_s, the
-- transactions' low watermark (ms), the number of events E, then E quadruples (txn_id, ts_ms,
-- customer_id, 1 to count this transaction's windows else 0), then (txn_id, ts_ms) pairs of
-- fraud labels that count.
--
-- Every step is O(log n) in the terminal's events or O(what it removes): ZADD by member
-- (idempotent: a replay changes nothing), a fraud is an event with a label whichever came
-- first, the prune is ZREMRANGEBYSCORE behind the low watermark, each window edge a ZCOUNT.
-- An item older than the newest event by the 7-day delay (a lagging partition, a late label)
-- changes the stored windows of the transactions 7 to 37 days after it: those, the newest per
-- customer, are counted again (O(log n) each).
--
-- Returns {seq, dropped, then per counted transaction: txn_id, ts_ms, customer_id and the six
-- counts (events, frauds per window)}; seq is the terminal's write counter after this call,
-- dropped the newest time a prune ever deleted.
local hash, events, labels, frauds, customers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, horizon, ttl, low = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local first_label = 6 + 4 * tonumber(ARGV[5])
local function text(number) return string.format('%.0f', number) end

local stored = redis.call('HMGET', hash, EVENT_TS, PRUNED_AT, SEQ, DROPPED)
local newest = tonumber(stored[1] or '0')
local pruned = tonumber(stored[2] or '0')
local dropped = tonumber(stored[4] or '0')

for i = 6, first_label - 1, 4 do
  local txn, ts = ARGV[i], ARGV[i + 1]
  redis.call('ZADD', events, ts, txn)
  redis.call('HSET', customers, txn, ARGV[i + 2])
  if redis.call('ZSCORE', labels, txn) then redis.call('ZADD', frauds, ts, txn) end
  if tonumber(ts) > newest then newest = tonumber(ts) end
end
for i = first_label, #ARGV, 2 do
  local txn = ARGV[i]
  redis.call('ZADD', labels, ARGV[i + 1], txn)
  local event_ts = redis.call('ZSCORE', events, txn)
  if event_ts then redis.call('ZADD', frauds, event_ts, txn) end
end

redis.call('HSET', hash, EVENT_TS, text(newest), UPDATED_AT, now)
if not stored[3] then
  -- a new terminal (or one that expired): its counter starts above any earlier one's
  redis.call('HSET', hash, SEQ, now .. '000')
end
local seq = redis.call('HINCRBY', hash, SEQ, 1)

-- prune what no window can reach: behind the terminal's newest event and the low watermark,
-- once the cut-off has moved an hour (of event time) since the last prune, so that most calls
-- skip it and none removes more than an hour's events of a terminal that keeps up
local cutoff = math.min(newest, low) - horizon
if cutoff - pruned > PRUNE_EVERY_MS then
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
  local label = redis.call('ZREVRANGEBYSCORE', labels, bound, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #label > 0 then
    dropped = math.max(dropped, tonumber(label[2]))
    redis.call('ZREMRANGEBYSCORE', labels, '-inf', bound)
  end
  redis.call('HSET', hash, PRUNED_AT, bound, DROPPED, text(dropped))
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end

-- the transactions whose windows to count: those asked for, and those a late item reaches
local wanted, order = {}, {}
local function want(txn, ts, customer)
  if not wanted[txn] then table.insert(order, txn) end
  wanted[txn] = {ts, customer}
end
for i = 6, first_label - 1, 4 do
  if ARGV[i + 3] == '1' then want(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
end
local reaching = newest - DELAY_MS
local longest = REACHES_MS[#REACHES_MS]
local newest_reached = {}  -- customer -> the newest of its transactions reached
local function reach(ts)
  if ts > reaching then return end  -- on time: nothing stored is 7 days newer
  local hits = redis.call(
    'ZRANGEBYSCORE', events, text(ts + DELAY_MS), '(' .. text(ts + longest), 'WITHSCORES')
  -- ascending by (score, member): the last hit of a customer is its newest
  for j = 1, #hits, 2 do
    local customer = redis.call('HGET', customers, hits[j])
    if customer then newest_reached[customer] = {hits[j], hits[j + 1]} end
  end
end
for i = 6, first_label - 1, 4 do reach(tonumber(ARGV[i + 1])) end
for i = first_label, #ARGV, 2 do reach(tonumber(ARGV[i + 1])) end
for customer, hit in pairs(newest_reached) do
  local known = wanted[hit[1]]
  if not known then want(hit[1], hit[2], customer) end
end

local reply = {seq, text(dropped)}
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
