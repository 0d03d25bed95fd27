--- lmp.queue: Queue, JoinableQueue and SimpleQueue in shared memory
-- (lmp.c.queue over core/queue.c). Items are pickled (JSON by default,
-- `{codec = "binary"}`); many producers and consumers in any processes.
-- See docs/api/queue.md.
local C = require "lmp.c.queue"
local pickle = require "lmp.pickle"

local M = {}
for _, name in ipairs{"Queue", "JoinableQueue", "SimpleQueue"} do
  M[name] = C[name]
  pickle.register("lmp." .. name, debug.getregistry()["lmp." .. name])
end

return M
