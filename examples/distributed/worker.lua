-- A worker of examples/distributed/master.lua: takes tasks until the
-- master says it is done.
--   LMP_AUTHKEY=secret lmp examples/distributed/worker.lua HOST PORT
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lmp = require "lmp"
local common = require "common"

local host, port = arg[1], tonumber(arg[2])
if not host or not port then
  io.stderr:write("usage: lmp worker.lua HOST PORT\n")
  os.exit(2)
end
local m = lmp.BaseManager{address = {host, port}, authkey = common.authkey()}
for _, name in ipairs(common.NAMES) do m:register(name) end
m:connect()
local tq, rq, done = m:get_task_queue(), m:get_result_queue(), m:get_done()
local me, n = lmp.current_process().pid, 0

-- One task; false once the master is done and the queue is empty.
local function step()
  local ok, t = pcall(tq.get, tq, 0.2)
  if ok then
    rq:put({id = t.id, result = t.n * t.n, worker = me})
    n = n + 1
    return true
  end
  if lmp.is_error(t, "empty") then return not done:is_set() end
  error(t, 0)
end

while true do
  local ok, more = pcall(step)
  if not ok then
    if not lmp.is_error(more, "broken") then error(more, 0) end
    break                         -- the master has finished and gone
  end
  if not more then break end
end
print(string.format("worker %d did %d tasks", me, n))
