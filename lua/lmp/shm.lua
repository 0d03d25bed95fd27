--- lmp.shm: Value and Array of C numbers, and raw named shared-memory
-- blocks (lmp.shared_memory), all attachable by name from any process.
-- See docs/api/shm.md.
local C = require "lmp.c.shm"
local pickle = require "lmp.pickle"

local M = {
  Value = C.Value,
  Array = C.Array,
  shared_memory = C.shared_memory,
}
for _, name in ipairs{"Value", "Array", "SharedMemory"} do
  pickle.register("lmp." .. name, debug.getregistry()["lmp." .. name])
end

return M
