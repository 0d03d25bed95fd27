-- A master that serves a task queue and a result queue to workers on any
-- machine (Python's classic BaseManager example, in lmp):
--
--   LMP_AUTHKEY=secret lmp examples/distributed/master.lua [HOST [PORT [NTASKS]]]
--   LMP_AUTHKEY=secret lmp examples/distributed/worker.lua HOST PORT   (any number)
--
-- Tasks are small descriptions ({id =, n =}), not data: send what a
-- worker needs to find or compute the data itself.
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lmp = require "lmp"
local common = require "common"
local T = lmp.manager_types

local host, port = arg[1] or "127.0.0.1", tonumber(arg[2]) or 0
local ntasks = tonumber(arg[3]) or 100

local tasks, results, done = T.Queue(), T.Queue(), T.Event()
local m = lmp.BaseManager{address = {host, port}, authkey = common.authkey()}
m:register("get_task_queue", function() return tasks end)
m:register("get_result_queue", function() return results end)
m:register("get_done", function() return done end)
m:start()                       -- the server runs in a child process
print(string.format("listening on %s %d", m.address[1], m.address[2]))
io.stdout:flush()

local tq, rq, dn = m:get_task_queue(), m:get_result_queue(), m:get_done()
for i = 1, ntasks do tq:put({id = i, n = i}) end

local seen, workers, dup, wrong = {}, {}, 0, 0
for _ = 1, ntasks do
  local r = rq:get(60)
  if seen[r.id] then dup = dup + 1 end
  if r.result ~= r.id * r.id then wrong = wrong + 1 end
  seen[r.id] = true
  workers[r.worker] = (workers[r.worker] or 0) + 1
end
dn:set()                        -- workers leave once the queue is empty
local nworkers = 0
for _ in pairs(workers) do nworkers = nworkers + 1 end
print(string.format("results: %d, duplicates: %d, wrong: %d, workers: %d",
  ntasks, dup, wrong, nworkers))
m:shutdown()
