--- Random values for property tests of lmp.pickle.
--   local G = require "helpers.gen"
--   local rng = G.rng(seed)
--   local v = G.value(rng, {depth = 4, width = 6})
-- Its own generator (an xorshift on 2^32), so a seed gives the same values
-- on every Lua. Values: nil holes, booleans, integers (64-bit extremes on
-- 5.3+), floats (random bits, -0.0, NaN, inf, subnormals), byte strings
-- (NUL, invalid UTF-8, the \1 tag byte), tables (sequences, maps, sparse,
-- mixed, table/boolean/float keys, metatables, shared references, cycles).
local G = {}

local has_int = math.type ~= nil

--- rng(seed) -> a function r(n) giving an integer in [1, n] (or a float
-- in [0, 1) without n).
function G.rng(seed)
  local s = (seed or 1) % 4294967296
  if s == 0 then s = 2463534242 end
  local function step()
    -- xorshift32 with arithmetic only (no bit ops in 5.1)
    local function xor(a, b)
      local r, bit = 0, 1
      while a > 0 or b > 0 do
        local x, y = a % 2, b % 2
        if x ~= y then r = r + bit end
        a, b, bit = (a - x) / 2, (b - y) / 2, bit * 2
      end
      return r
    end
    s = xor(s, (s * 8192) % 4294967296)
    s = xor(s, math.floor(s / 131072))
    s = xor(s, (s * 32) % 4294967296)
    return s
  end
  return function(n)
    local x = step() / 4294967296
    if n then return math.floor(x * n) + 1 end
    return x
  end
end

local specials = {0.0, -0.0, 0 / 0, math.huge, -math.huge, 0.1 + 0.2, 1e300,
  4.9406564584124654e-324, 2.2250738585072014e-308, 1 / 3, 2 ^ 53, 2 ^ 53 + 1,
  1e14, 1e14 - 1, -1e14, 123.456, 1.5, 1e-7}

function G.float(r)
  local k = r(4)
  if k == 1 then return specials[r(#specials)] end
  if k == 2 then return (r(2000) - 1000) / 8 end        -- short decimals
  local m = r() + r() / 4294967296                       -- ~52 random bits
  local e = r(120) - 60
  local x = m * 2 ^ e
  if r(2) == 1 then x = -x end
  return x
end

function G.integer(r)
  local k = r(5)
  if k == 1 then return r(21) - 11 end
  if k == 2 then return r(2 ^ 31) - 2 ^ 30 end
  if has_int then
    if k == 3 then
      local e = ({math.maxinteger, math.mininteger, 0, -1, 2 ^ 53 + 1})[r(5)]
      return math.tointeger(e) or e
    end
    -- a random 64-bit integer
    local hi, lo = r(2 ^ 32) - 1, r(2 ^ 32) - 1
    return math.tointeger(hi) * 4294967296 + math.tointeger(lo)   -- wraps
  end
  if k == 3 then return ({2 ^ 53, -2 ^ 53, 1e15, 0})[r(4)] end
  return (r(2 ^ 26) - 1) * 2 ^ 26 + r(2 ^ 26) - 1
end

local alphabet = {"a", "b", "z", "_", " ", "\0", "\1", "\n", "\"", "\\", "/",
  "\127", "\128", "\255", "\195\169", "\226\130\172", "\240\159\152\128", "\237\160\128"}

function G.string(r)
  local n = r(9) - 1
  if r(8) == 1 then n = r(40) end
  local parts = {}
  for i = 1, n do
    if r(3) == 1 then parts[i] = alphabet[r(#alphabet)]
    else parts[i] = string.char(96 + r(26)) end
  end
  return table.concat(parts)
end

function G.scalar(r)
  local k = r(10)
  if k == 1 then return r(2) == 1 end
  if k <= 4 then return G.integer(r) end
  if k <= 6 then return G.float(r) end
  return G.string(r)
end

-- At most one table key per table: H.deep_equal matches table keys by
-- trying candidates, which is only reliable with a single candidate.
local function key(r, pool, has_table_key)
  local k = r(10)
  if k <= 5 then return G.string(r) .. "" end
  if k <= 7 then return r(12) end
  if k == 8 then return r(2) == 1 end
  if k == 9 then
    local f = G.float(r)
    if f == f then return f end
    return 0.5
  end
  if has_table_key then return r(12) end
  return pool[r(#pool)]
end

--- value(r, opts) -> a random value (never nil at the root).
function G.value(r, opts, depth, pool)
  opts = opts or {}
  depth = depth or 0
  pool = pool or {}
  local maxd, width = opts.depth or 4, opts.width or 6
  if depth >= maxd or r(3) == 1 then return G.scalar(r) end
  if #pool > 0 and r(8) == 1 then return pool[r(#pool)] end   -- shared / cycle
  local t = {}
  pool[#pool + 1] = t
  local shape, n = r(5), r(width + 1) - 1
  if shape == 1 then                                  -- sequence
    for i = 1, n do t[i] = G.value(r, opts, depth + 1, pool) end
  elseif shape == 2 then                              -- string-keyed map
    for _ = 1, n do t[G.string(r) .. "k"] = G.value(r, opts, depth + 1, pool) end
  elseif shape == 3 then                              -- sparse, holes
    for _ = 1, n do t[r(20)] = G.value(r, opts, depth + 1, pool) end
  else                                                -- anything goes
    local tk = false
    for _ = 1, n do
      local k = key(r, pool, tk)
      if type(k) == "table" then tk = true end
      t[k] = G.value(r, opts, depth + 1, pool)
    end
  end
  if r(10) == 1 then
    local mt = r(2) == 1 and pool[r(#pool)] or {__name = "gen"}
    if mt ~= t then setmetatable(t, mt) end
  end
  return t
end

return G
