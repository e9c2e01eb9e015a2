-- Functions every script of the store shares (prepended after the layout's names).

-- txn id a before b, byte by byte as Python compares them (Lua's < on strings follows the
-- server's locale)
local function id_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- (ts, txn) before (other_ts, other): by event time, then by txn id
local function txn_before(txn, ts, other, other_ts)
  if ts ~= other_ts then return ts < other_ts end
  return id_before(txn, other)
end
