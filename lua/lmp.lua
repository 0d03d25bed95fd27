--- lmp: multiprocessing for Lua. See docs/API.md.
--
-- This file only wires the public names to the modules that implement
-- them. Modules load on first use, so `require "lmp"` stays cheap (spawned
-- children and thread states start faster) and each concept keeps its own
-- file under lua/lmp/.
local core = require "lmp.core"

local lmp = {
  _VERSION = core._VERSION,
  time = core.time,
  sleep = core.sleep,
  error = core.error,
  is_error = core.is_error,
}

-- public name -> module that exports it (the module returns a table with
-- that field).
local where = {
  pickle = "lmp.pickle", set_codec = "lmp.pickle", get_codec = "lmp.pickle",
  Process = "lmp.process", current_process = "lmp.process",
  parent_process = "lmp.process", active_children = "lmp.process",
  cpu_count = "lmp.process", set_start_method = "lmp.process",
  get_start_method = "lmp.process", get_context = "lmp.process",
  atfork = "lmp.process", set_forkserver_preload = "lmp.forkserver",
  Pipe = "lmp.pipe", wait = "lmp.pipe", Connection = "lmp.pipe",
  as_completed = "lmp.pipe", connection = "lmp.connection",
  Pool = "lmp.pool", AsyncResult = "lmp.pool",
  Queue = "lmp.queue", JoinableQueue = "lmp.queue", SimpleQueue = "lmp.queue",
  Lock = "lmp.sync", RLock = "lmp.sync", Semaphore = "lmp.sync",
  BoundedSemaphore = "lmp.sync", Event = "lmp.sync", Condition = "lmp.sync",
  Barrier = "lmp.sync",
  Value = "lmp.shm", Array = "lmp.shm", shared_memory = "lmp.shm",
  RawValue = "lmp.shm", RawArray = "lmp.shm", ShareableList = "lmp.shm",
  Manager = "lmp.manager", BaseManager = "lmp.manager", manager_types = "lmp.manager_types",
  RedisPool = "lmp.redis",
  ThreadPool = "lmp.thread", threadlocal = "lmp.thread",
  fork_processes = "lmp.prefork", task_id = "lmp.prefork",
  bind_socket = "lmp.socket",
  log = "lmp.log",
}
lmp._where = where

return setmetatable(lmp, {
  __index = function(t, name)
    local modname = where[name]
    if not modname then return nil end
    local mod = require(modname)
    local v = mod[name]
    if v == nil and modname == "lmp." .. name then v = mod end
    rawset(t, name, v)
    return v
  end,
})
