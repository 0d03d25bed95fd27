--- lmp.shm: Value and Array of C numbers (and their lock-free Raw forms),
-- ShareableList, and raw named shared-memory blocks (lmp.shared_memory),
-- all attachable by name from any process. See docs/api/shm.md.
local C = require "lmp.c.shm"
local pickle = require "lmp.pickle"

local Value, Array = C.Value, C.Array

local M = {
  Value = Value,
  Array = Array,
  -- Python's sharedctypes.RawValue / RawArray: no lock, no get_lock.
  RawValue = function(type, init) return Value(type, init, false) end,
  RawArray = function(type, size_or_list) return Array(type, size_or_list, false) end,
  ShareableList = C.ShareableList,
  shared_memory = C.shared_memory,
}
for _, name in ipairs{"Value", "Array", "SharedMemory", "ShareableList"} do
  pickle.register("lmp." .. name, debug.getregistry()["lmp." .. name])
end

return M
