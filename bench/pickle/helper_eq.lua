-- Deep equality (NaN-free data, no shared tables): the bench's sanity check.
local function eq(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then
    return a == b and (not math.type or math.type(a) == math.type(b))
  end
  for k, v in pairs(a) do if not eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
return eq
