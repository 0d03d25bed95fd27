--- Structural equality that also checks identity (NaN-free data): a and b are
-- "the same value" if there is a one-to-one map from a's tables and functions
-- to b's that makes them equal. Shared tables and cycles must come back
-- shared; numbers keep their subtype (5.3+); functions must have the same
-- bytecode, equal upvalues and, where debug.upvalueid exists, the same
-- sharing of upvalues. helper_eq.lua is the plain (tree) version.
-- Returns true, or false and the path where they differ.
local mtype = math.type
local dump = string.dump
local upvalueid = debug.upvalueid
-- PUC Lua 5.1 cannot join upvalues (docs/api/pickle.md): skip that check there.
local check_upvalue_ids = upvalueid ~= nil and debug.upvaluejoin ~= nil

return function(a, b)
  local fwd, back = {}, {}       -- a-object -> b-object and its inverse
  local ufwd, uback = {}, {}     -- upvalue ids, same
  local function same(x, y, path)
    if type(x) ~= type(y) then return false, path .. ": type " .. type(x) .. " vs " .. type(y) end
    local t = type(x)
    if t == "number" then
      if x ~= y then return false, path .. ": " .. tostring(x) .. " vs " .. tostring(y) end
      if mtype and mtype(x) ~= mtype(y) then return false, path .. ": " .. mtype(x) .. " vs " .. mtype(y) end
      return true
    end
    if t ~= "table" and t ~= "function" then
      if x ~= y then return false, path .. ": value differs" end
      return true
    end
    if fwd[x] ~= nil or back[y] ~= nil then
      if fwd[x] == y and back[y] == x then return true end
      return false, path .. ": identity differs (a shared table or cycle was not kept)"
    end
    fwd[x], back[y] = y, x
    if t == "function" then
      local okx, dx = pcall(dump, x)
      local oky, dy = pcall(dump, y)
      if okx ~= oky or (okx and dx ~= dy) then return false, path .. ": bytecode differs" end
      local i = 1
      while true do
        local nx, vx = debug.getupvalue(x, i)
        local ny, vy = debug.getupvalue(y, i)
        if nx ~= ny then return false, path .. ": upvalue names differ" end
        if nx == nil then break end
        local ok, why = same(vx, vy, path .. "<upvalue " .. nx .. ">")
        if not ok then return false, why end
        if check_upvalue_ids then
          local ix, iy = upvalueid(x, i), upvalueid(y, i)
          if ufwd[ix] ~= nil or uback[iy] ~= nil then
            if ufwd[ix] ~= iy or uback[iy] ~= ix then
              return false, path .. "<upvalue " .. nx .. ">: upvalue sharing differs"
            end
          else
            ufwd[ix], uback[iy] = iy, ix
          end
        end
        i = i + 1
      end
      return true
    end
    local ok, why = same(getmetatable(x), getmetatable(y), path .. "<metatable>")
    if not ok then return false, why end
    for k, v in pairs(x) do
      if type(k) == "table" or type(k) == "function" then
        return false, path .. ": helper_iso does not handle reference keys"
      end
      ok, why = same(v, rawget(y, k), path .. "[" .. tostring(k) .. "]")
      if not ok then return false, why end
    end
    for k in pairs(y) do
      if rawget(x, k) == nil then return false, path .. ": extra key " .. tostring(k) end
    end
    return true
  end
  return same(a, b, "value")
end
