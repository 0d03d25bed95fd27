--- lmp.sync: process-shared Lock, RLock, Semaphore, BoundedSemaphore,
-- Event, Condition and Barrier. Each lives in a small named shared-memory
-- block (lmp.c.sync); fork children inherit it, spawn children and pool
-- workers attach to it by name when it is pickled (Process args, pool
-- initargs, queue items). See docs/api/sync.md.
local C = require "lmp.c.sync"
local pickle = require "lmp.pickle"

local M = {}
for _, name in ipairs{"Lock", "RLock", "Semaphore", "BoundedSemaphore",
                      "Event", "Condition", "Barrier"} do
  M[name] = C[name]
  pickle.register("lmp." .. name, debug.getregistry()["lmp." .. name])
end

return M
