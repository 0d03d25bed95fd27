--- lmp.thread: ThreadPool and threadlocal.
--
-- A ThreadPool is an lmp.Pool whose workers are OS threads instead of
-- processes: the same scheduler (core/pool.c), channels and API, with a
-- launcher that starts a thread running its own Lua state
-- (modules/lthread.c). Values cross by lmp.pickle, as between processes:
-- states share nothing, so there are no data races in Lua code, and the
-- threads run truly in parallel (no global lock).
--
-- A thread cannot be killed safely: terminate() shuts the channels down,
-- which ends every idle worker at once; a worker busy in a long task ends
-- when the task returns (or with the process).
local core = require "lmp.core"
local C = require "lmp.c.thread"
local pickle = require "lmp.pickle"
local P = require "lmp.process"

local M = {}
local counter = 0
local pools = setmetatable({}, {__mode = "k"})

--- _live_threads() -> lmp threads running in this process (fork refuses
-- while there are any, unless allow_threads).
function M._live_threads() return C.live() end

--- Entry point of a worker thread's own Lua state (see lthread.c).
function M._thread_main(fd, blob)
  local info = pickle.loads(blob)
  pickle._codec_restore(info.switch)   -- lmp.set_codec of the creator
  M._in_thread = info.name
  require("lmp.pool")._worker_main(fd, info)
end

local function launcher(index, child_fd, info, pool)
  counter = counter + 1
  local name = "ThreadPoolWorker-" .. counter
  local blob = pickle.dumps({codec = info.codec, initializer = info.initializer,
                             initargs = info.initargs, maxtasks = info.maxtasks,
                             name = name, switch = pickle._codec_state()},
                            {name = "ThreadPool initializer"})
  local th = C.start(child_fd, blob, name)
  -- Stops an idle worker: its recv meets end of file on the channel.
  local function stop()
    local w = pool.workers[index]
    if w and w.h and w.h.thread == th then C.shutdown(w.fd) end
  end
  return {
    thread = th, sentinel = th:sentinel(), name = name, pid = nil,
    exit_status = function() return th:status() end,
    join = function(timeout) return th:join(timeout) end,
    terminate = stop, kill = stop,
    close = function() th:close() end,
  }
end

--- ThreadPool{threads = n, initializer =, initargs =, codec =,
-- maxtasksperchild =} (or ThreadPool(n)): the Pool API, run by n OS threads. codec defaults
-- to "binary", or to lmp.set_codec's choice when the switch is set.
function M.ThreadPool(opts)
  if type(opts) == "number" then opts = {threads = opts} end   -- ThreadPool(4)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'ThreadPool' (table or number expected)", 2)
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.processes = o.threads or o.processes
  o.threads = nil
  -- Threads share one process and one build of lmp: the binary form is
  -- exact too and 4-5x faster than JSON here, so it is the default
  -- unless lmp.set_codec (or LMP_CODEC) chose one.
  if o.codec == nil then o.codec = pickle.default_codec("binary") end
  local pool = require("lmp.pool")._new_pool(o, launcher)
  pool._kind = "ThreadPool"
  pools[pool] = true
  return pool
end

-- A forked child has none of these threads: its copies of the pools must
-- not be used (the pool's owner check raises "closed"), and must not try
-- to stop threads that do not exist in it when collected.
P.atfork{child = function()
  for pool in pairs(pools) do
    for _, w in pairs(pool.workers or {}) do
      if w.h then w.h.terminate, w.h.kill = function() end, function() end end
    end
  end
end}

---------------------------------------------------------------- threadlocal
-- Fields private to the coroutine (and, since every OS thread has its own
-- Lua state, to the thread) that sets them. Weak keys: a coroutine's
-- fields go when the coroutine is collected.
local MAIN = {}            -- the key of a main coroutine (5.1: running() is nil)

local function current()
  local co, ismain = coroutine.running()
  if co == nil or ismain then return MAIN end
  return co
end

--- threadlocal() -> an object whose fields each coroutine sees apart.
function M.threadlocal()
  local per = setmetatable({}, {__mode = "k"})
  return setmetatable({}, {
    __index = function(_, k)
      local t = per[current()]
      return t and t[k]
    end,
    __newindex = function(_, k, v)
      local key = current()
      local t = per[key]
      if not t then t = {} per[key] = t end
      t[k] = v
    end,
    __tostring = function() return "lmp.threadlocal" end,
  })
end

return M
