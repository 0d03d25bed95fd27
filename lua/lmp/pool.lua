--- lmp.pool: Pool and AsyncResult.
--
-- The scheduling lives in C (core/pool.c, bound as lmp.c.pool): one
-- socketpair per worker, one epoll loop in the master that runs only
-- inside map/get/wait/join/poll and the iterators, dispatch by readiness
-- with one chunk running and one ahead per worker, each function shipped
-- once per worker under an id, chunks of tasks and of results, worker
-- deaths seen through the workers' sentinels (pidfds). This file pickles,
-- keeps the jobs (AsyncResults) and their callbacks, and starts workers.
--
-- Launchers make the workers: processes here; lmp.ThreadPool passes its
-- own launcher to _new_pool:
--   launcher(index, child_fd, info, pool) starts a worker running
--   require("lmp.pool")._worker_main(child_fd, info) and returns a handle
--   {sentinel = fd readable once the worker ended (or nil), name =,
--    pid = or nil, kill = fn(), terminate = fn() (optional),
--    exit_status = fn() -> nil while running, else a number or string,
--    join = fn(timeout) -> true once ended, close = fn() (optional)}.
-- The launcher owns child_fd: _worker_main closes it when it returns;
-- the process launcher closes the master's copy after forking.
local core = require "lmp.core"   -- first: it registers lmp.c.*
local CP = require "lmp.c.pool"
local pipe = require "lmp.c.pipe"
local proc = require "lmp.c.proc"
local pickle = require "lmp.pickle"
local P = require "lmp.process"

local M = {}

-- A big payload comes as an lmp.Bytes (a pickle of 64 KiB or more, a
-- chunk read from a channel): freed once used, not left to the collector.
local function free_bytes(p)
  if type(p) ~= "string" then p:free() end
end
-- getpid() is a system call; the pid only changes in lmp's fork children.
local my_pid = proc.getpid()
local function getpid() return my_pid end
local unpack = table.unpack or unpack
local loads, loads_into = pickle._loads_payload, pickle.loads_into
-- Every live pool of this Lua state: _poll_all and _fileno_all (the C
-- host's lmp_poll and lmp_fileno, modules/lembed.c) drive what is here, so
-- any pool made by _new_pool (ThreadPool too) joins a host's loop.
local live_pools = setmetatable({}, {__mode = "k"})
local all_ep            -- epoll fd over every pool's fd (_fileno_all)
local cb_errors         -- while _poll_all runs: callback errors, to raise
P.atfork{child = function()
  my_pid = proc.getpid()
  all_ep = nil            -- a _parent_only fd: the child closed it
end}
local F_STAR = 1

local new_error = core.error   -- (kind, msg, fields): an error object

local function argerror(n, fname, msg)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

---------------------------------------------------------------- worker side

local function traceback_handler(e)
  local kind = type(e) == "table" and core.is_error(e) and e.kind or nil
  local msg = kind and e.message or e
  return {message = tostring(msg), kind = kind,
          traceback = debug.traceback("", 2)}
end

-- A worker with nothing to do for this long collects its garbage and
-- gives free memory back to the system (once per idle spell).
local IDLE_SECS = 0.1

-- A table for n results, sized up front: filled from {}, Lua regrows and
-- rehashes it about log2(n) times. new_table refuses more than 2^26 slots;
-- a longer list grows from there.
local function result_list(n)
  return core.new_table(math.min(n, 67108864))
end
M._result_list = result_list

-- Runs f over a chunk inside one xpcall; on error, i tells which item.
local function run_chunk(f, args, n, star, first, who)
  local results, i = result_list(n), 0
  local ok, err = xpcall(function()
    if star then
      for j = 1, n do
        i = j
        local a = args[j]
        results[j] = f(unpack(a, 1, a.n or #a))
      end
    else
      for j = 1, n do
        i = j
        results[j] = f(args[j])
      end
    end
  end, traceback_handler)
  if ok then return results end
  err.index = first + i - 1
  err.worker = who
  return nil, err
end

--- Runs a worker's loop on channel fd until told to stop, the master goes
-- away, or info.maxtasks chunks are done; then closes fd and returns (it
-- never exits the process: the launcher decides how the worker ends).
-- info = {codec =, initializer =, initargs =, maxtasks =, name =}.
function M._worker_main(fd, info)
  local ch = CP.worker(fd)
  local recv, send = ch.recv, ch.send
  local codec = info.codec or pickle.default_codec()
  local dumps, dumps_list = pickle.encoder(codec), pickle.list_encoder(codec)
  local who = info.name or P.current_process().name
  if info.initializer then
    info.initializer(unpack(info.initargs or {}))
  end
  local fns, bad, done, maxtasks = {}, {}, 0, info.maxtasks
  local busy = false       -- worked since it last gave memory back
  while true do
    local op, fid, data, cid, first, n, flags = recv(ch, busy and IDLE_SECS or nil)
    if op == "idle" then
      -- nothing to do for a while: give the last job's peak back
      collectgarbage()
      proc.trim()
      busy = false
    elseif op == "task" then
      busy = true
      local f, results, err = fns[fid], nil, nil
      local okl, args = pcall(loads, data)
      free_bytes(data)                                 -- lmp.Bytes: done with
      if not f or not okl then
        err = {message = not f and (bad[fid] or "function unknown to the worker")
                 or "cannot unpickle the arguments: " .. tostring(args),
               kind = "pickle", index = first, worker = who}
      else
        results, err = run_chunk(f, args, n, flags == F_STAR, first, who)
      end
      local okd, out
      if err then okd, out = pcall(dumps, err, "result")
      else okd, out = pcall(dumps_list, results, n, "result") end
      if not okd then
        err = {message = tostring(type(out) == "table" and out.message or out),
               kind = "pickle", index = first, worker = who}
        out = dumps(err)
      end
      local sent = send(ch, cid, err == nil, out)
      free_bytes(out)
      if not sent then break end
      done = done + 1
      if maxtasks and done >= maxtasks then break end
    elseif op == "def" then
      local okl, f = pcall(loads, data)
      fns[fid] = okl and f or nil
      bad[fid] = not okl and ("cannot unpickle the function: " .. tostring(f)) or nil
    elseif op == "forget" then
      fns[fid], bad[fid] = nil, nil
    else
      break                                   -- "stop", or the master is gone
    end
  end
  ch:close()
end

local function launch_process(index, child_fd, info, pool)
  local name = "PoolWorker-" .. index
  local p
  local winfo = {name = name, codec = info.codec, initializer = info.initializer,
                 initargs = info.initargs, maxtasks = info.maxtasks}
  -- the pool's context, else the default start method (lmp.set_start_method)
  local method = pool._ctx and pool._ctx.start_method or P.get_start_method()
  if method == "spawn" or method == "forkserver" then   -- child_fd by number
    p = P.Process{target = "lmp.pool:_worker_main", args = {child_fd, winfo},
                  name = name, daemon = true, context = P.get_context(method),
                  pass_fds = {child_fd}}
  else
    p = P.Process{target = M._worker_main, args = {child_fd, winfo},
                  name = name, daemon = true, context = P.get_context("fork")}
  end
  local ok, err = pcall(p.start, p)
  proc.close(child_fd)                            -- the child's end
  if not ok then error(err, 0) end
  return {
    sentinel = p.sentinel, name = name, pid = p.pid,
    kill = function() p:kill() end,
    terminate = function() p:terminate() end,
    exit_status = function() return p.exitcode end,
    join = function(t) return p:join(t) end,
    close = function() if not p:is_alive() then pcall(p.close, p) end end,
  }
end

---------------------------------------------------------------- AsyncResult

local AsyncResult = {}
AsyncResult.__index = AsyncResult

function AsyncResult:ready()
  return self._ready
end

function AsyncResult:successful()
  if not self._ready then error("result is not ready", 2) end
  return self._error == nil
end

--- wait([timeout]) -> true once the result is ready, false on timeout.
function AsyncResult:wait(timeout)
  if self._ready then return true end
  local pool = self._pool
  local deadline = timeout and core.time() + timeout
  while not self._ready do
    local left = deadline and deadline - core.time()
    if left and left <= 0 then return false end
    if pool._state == "done" then return self._ready end
    pool:_step(left)
  end
  return true
end

function AsyncResult:get(timeout)
  if not self:wait(timeout) then
    error(new_error("timeout", string.format("result not ready after %gs", timeout)), 2)
  end
  if self._error then error(self._error, 2) end
  return self._value
end

--- cancel() -> true if no part of the task had started (get then raises
-- `cancelled`); false if it is running or done.
function AsyncResult:cancel()
  local pool = self._pool
  if self._ready or (self._nchunks or 0) > 0 then return false end
  if pool.core and pool.core:sent(self._id) then return false end
  self:_finish(nil, new_error("cancelled", "task was cancelled"))
  return true
end

function AsyncResult:_finish(value, err)
  if self._ready then return end
  self._ready, self._value, self._error = true, value, err
  self._pool:_forget_job(self, err)
  local cb = err and self._error_callback or (not err and self._callback)
  if cb then
    local ok, e = pcall(cb, err or value)
    if ok then return end
    if cb_errors then cb_errors[#cb_errors + 1] = e
    else io.stderr:write("lmp: pool callback failed: ", tostring(e), "\n") end
  end
end

---------------------------------------------------------------- Pool

local Pool = {}
Pool.__index = Pool

-- A job has its result (or error): the pool stops tracking it, and an
-- error drops its chunks not yet sent. (RedisPool has its own.)
function Pool:_forget_job(job, err)
  self.jobs[job._id] = nil
  if err and self.core then self.core:drop(job._id) end
end

local function check_fn(fn, fname)
  if type(fn) ~= "function" then argerror(1, fname, "function expected, got " .. type(fn)) end
end

function Pool:_check_open(fname)
  if self._owner ~= getpid() then
    error(new_error("closed", "pool belongs to another process (was it inherited by fork?)"), 3)
  end
  if self._state ~= "run" then
    error(new_error("closed", "pool is " .. (self._state == "close" and "closed" or "terminated")
      .. " (" .. fname .. ")"), 3)
  end
end

function Pool:_start_worker(slot)
  local a, b = pipe.socketpair()
  P._parent_only(a)
  local ok, h = pcall(self._launch, slot, b, self._info, self)
  if ok then ok, h = pcall(function()
    self.core:attach(slot, a, h.sentinel)      -- the core owns a from now on
    return h
  end) end
  if not ok then
    P._parent_only(a, false)
    proc.close(a)
    error(h, 0)
  end
  self.workers[slot] = {index = slot, h = h, fd = a, name = h.name}
end

local function check_opts(opts)
  -- Pool(4), as Python's Pool(4): the number of workers
  if type(opts) == "number" then opts = {processes = opts} end
  if opts ~= nil and type(opts) ~= "table" then argerror(1, "Pool", "table or number expected") end
  opts = opts or {}
  local n = opts.processes or opts.threads or P.cpu_count()
  if type(n) ~= "number" or n % 1 ~= 0 then argerror(1, "Pool", "processes must be an integer") end
  if n < 1 or n > 4096 then argerror(1, "Pool", "processes must be 1 to 4096") end
  local maxt = opts.maxtasksperchild
  if maxt ~= nil and (type(maxt) ~= "number" or maxt < 1 or maxt % 1 ~= 0) then
    argerror(1, "Pool", "maxtasksperchild must be an integer >= 1, or nil")
  end
  if opts.initializer ~= nil and type(opts.initializer) ~= "function" then
    argerror(1, "Pool", "initializer must be a function")
  end
  if opts.initargs ~= nil and type(opts.initargs) ~= "table" then
    argerror(1, "Pool", "initargs must be a table")
  end
  local codec = pickle.resolve_codec(opts.codec)   -- nil: lmp.set_codec's default
  if not codec then argerror(1, "Pool", "codec must be 'json' or 'binary'") end
  return opts, math.floor(n), maxt, codec
end

--- _new_pool(opts, launcher): a pool whose workers launcher starts (see
-- the top of this file). lmp.ThreadPool builds on it.
function M._new_pool(opts, launcher)
  local n, maxt, codec
  opts, n, maxt, codec = check_opts(opts)
  local self = setmetatable({
    n = n, _launch = launcher, _ctx = opts.context,
    _owner = getpid(), _state = "run",
    _info = {codec = codec, initializer = opts.initializer,
             initargs = opts.initargs, maxtasks = maxt},
    _dumps = pickle.encoder(codec), _slice = pickle.slice_encoder(codec),
    _list = pickle.list_encoder(codec),
    core = CP.new(n, maxt or 0), workers = {}, jobs = {}, feeders = {},
    fn_ids = setmetatable({}, {__mode = "k"}), next_fid = 0, next_job = 0,
  }, M._pool_mt)
  self.ep = self.core:fileno()
  P._parent_only(self.ep)
  local ok, err = pcall(function()
    for i = 1, n do self:_start_worker(i) end
  end)
  if not ok then
    self:terminate()
    error(err, 0)
  end
  live_pools[self] = true
  if all_ep then pipe.epoll_add(all_ep, self.ep) end
  if newproxy then                         -- 5.1/LuaJIT: __gc on a proxy
    -- (a strong reference: the finalizer keeps the pool alive for its run;
    -- a weak one would already be cleared then)
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function() pcall(Pool.terminate, self) end
    self._gc = proxy
  end
  return self
end

local pool_mt = {__index = Pool,
  __gc = function(self) if self._state ~= "done" then pcall(Pool.terminate, self) end end,
  __close = function(self) self:terminate() end,
  __tostring = function(self)
    return string.format("lmp.Pool(%d workers, %s)", self.n, self._state)
  end}

M._pool_mt = pool_mt

function M.Pool(opts)
  return M._new_pool(opts, launch_process)
end

--- codec() -> "json" or "binary": how this pool and its workers pickle.
function Pool:codec() return self._info.codec end

--- fileno() -> an fd readable whenever poll() has something to do.
function Pool:fileno() return self.ep end

-- fn -> id; each function is pickled once while the core keeps it.
function Pool:_fid(fn)
  local id = self.fn_ids[fn]
  if id and self.core:has_fn(id) then return id end
  id = self.next_fid + 1
  self.next_fid = id
  self.core:define(id, self._dumps(fn, "function"))
  self.fn_ids[fn] = id
  return id
end

local function remote_error(e, name)
  local who = e.worker or name
  return new_error(e.kind == "pickle" and "pickle" or "remote",
    string.format("task %d raised in %s: %s", e.index or 0, who, tostring(e.message)),
    {traceback = e.traceback, worker = who, index = e.index, remote_kind = e.kind})
end

function Pool:_on_exit(slot, jobid, k, first, n, lost)
  local w = self.workers[slot]
  self.workers[slot] = nil
  if not w then return end
  P._parent_only(w.fd, false)
  self.core:detach(slot)             -- closes the channel: forgotten first
  local code = w.h.exit_status()
  if code == nil then
    if not w.h.join(0.5) then pcall(w.h.kill) w.h.join(1) end
    code = w.h.exit_status()
  end
  if w.h.close then pcall(w.h.close) end
  if self._state == "run" or (self._state == "close" and not self._stopping) then
    local ok, err = pcall(self._start_worker, self, slot)
    if not ok then io.stderr:write("lmp: could not replace a pool worker: ", tostring(err), "\n") end
  end
  local job = lost and self.jobs[jobid]
  if job then
    job:_on_chunk(k, first, n, nil, new_error("worker_lost", string.format(
      "worker %s (pid %s) died with exit code %s while running task %d",
      w.name, tostring(w.h.pid), tostring(code), first),
      {worker = w.name, pid = w.h.pid, exitcode = code, index = first}))
  end
end

function Pool:_events()
  local c = self.core
  while self._state ~= "done" do   -- a callback may have terminated the pool
    local kind, slot, jobid, k, first, n, ok, payload = c:event()
    if not kind then return end
    if kind == "done" then
      local job = self.jobs[jobid]
      -- a big payload is lmp.Bytes: a map reads it in place, and it is
      -- freed here at once (not at Lua's next collection)
      if job then
        job._nchunks = (job._nchunks or 0) + 1
        if ok and job._on_payload then
          job:_on_payload(k, first, n, payload)
        elseif ok then
          job:_on_chunk(k, first, n, loads(payload))
        else
          local w = self.workers[slot]
          job:_on_chunk(k, first, n, nil, remote_error(loads(payload), w and w.name or "?"))
        end
      end
      free_bytes(payload)
    else
      self:_on_exit(slot, jobid, k, first, n, ok)
    end
  end
end

-- Keeps a few chunks of lazy inputs (imap over iterators) queued.
-- Returns true when an input ran dry: its job may now be complete with
-- nothing left to wake its reader (an empty input sends no chunk).
function Pool:_feed()
  local f = self.feeders[1]
  if not f then return false end
  local want = 8 * self.n + 2      -- enough to top a worker up in one write
  local queued, dry = self.core:queued(), false
  while queued < want do
    if not f() then
      table.remove(self.feeders, 1)
      dry = true
      f = self.feeders[1]
      if not f then break end
    end
    queued = queued + 1
  end
  self.core:dispatch()
  return dry
end

-- One turn of the loop: waits up to timeout (nil: until something
-- happens) for results or deaths and handles them. Returns the number of
-- events handled. Never blocks after an input ran dry, so that the
-- caller looks at its job again first.
function Pool:_step(timeout)
  if self.feeders[1] and self:_feed() then timeout = 0 end
  local n = self.core:step(timeout)
  if n > 0 then self:_events() end
  return n
end

--- poll([timeout]) runs due callbacks; never blocks longer than timeout
-- (0 or nil: not at all). Returns the number of events handled.
function Pool:poll(timeout)
  if self._state == "done" or self._owner ~= getpid() then return 0 end
  return self:_step(timeout or 0)
end

---------------------------------------------------------------- jobs

function Pool:_new_job(fname, opts)
  self:_check_open(fname)
  if opts ~= nil and type(opts) ~= "table" then argerror(3, fname, "options must be a table") end
  opts = opts or {}
  if opts.callback ~= nil and type(opts.callback) ~= "function" then
    argerror(3, fname, "callback must be a function")
  end
  if opts.error_callback ~= nil and type(opts.error_callback) ~= "function" then
    argerror(3, fname, "error_callback must be a function")
  end
  self.next_job = self.next_job + 1
  local job = setmetatable({_pool = self, _id = self.next_job, _ready = false,
    _callback = opts.callback, _error_callback = opts.error_callback}, AsyncResult)
  self.jobs[job._id] = job
  return job
end

local function default_chunksize(n, workers)
  local c = math.ceil(n / (workers * 4))
  return c < 1 and 1 or c
end

local function check_chunksize(cs, fname)
  if cs ~= nil and (type(cs) ~= "number" or cs < 1) then
    argerror(3, fname, "chunksize must be >= 1")
  end
  return cs and math.floor(cs)
end

local function chunk_opts(x, fname)
  if type(x) == "table" then return check_chunksize(x.chunksize, fname), x end
  return check_chunksize(x, fname), {}
end

-- Default chunks are kept near this many pickled bytes: big items gain
-- nothing from sharing a frame, and a frame that fits in the cache is
-- copied faster (60 x 1 MiB strings, warm: 2,270 MiB/s in Python's
-- chunks of 8, 3,000 MiB/s one by one). Tiny tasks keep Python's sizes.
local CHUNK_BYTES = 1048576

-- Queues the chunks of list (1..n) for job; returns the chunk count.
function Pool:_submit_list(job, fn, list, n, chunksize, star)
  local fid, slice, c = self:_fid(fn), self._slice, self.core
  local flags = star and F_STAR or 0
  local adapt = not chunksize
  chunksize = chunksize or default_chunksize(n, self.n)
  -- when the chunks are ours to size, the first item goes alone, and each
  -- chunk's pickle bounds the chunks after it
  local alone = adapt and chunksize > 1
  local k, first = 0, 1
  while first <= n do
    local last = alone and k == 0 and 1 or math.min(first + chunksize - 1, n)
    k = k + 1
    -- the first chunks go out at once (idle workers start while the rest
    -- are pickled), and so does every big one (pickling the next overlaps
    -- the workers' work: a 100k JSON map took half the time); small ones
    -- wait, and each worker gets its share of them in one write
    local payload = slice(list, first, last, "args")
    local size, items = #payload, last - first + 1
    c:submit(job._id, k, fid, first, items, flags, payload, k > self.n and size < 16384)
    free_bytes(payload)
    if adapt and size * chunksize > CHUNK_BYTES * items then
      chunksize = math.max(1, math.floor(CHUNK_BYTES * items / size))
    end
    first = last + 1
  end
  c:dispatch()
  return k
end

local function apply_chunk(job, _, _, _, results, err)
  if err then job:_finish(nil, err) else job:_finish(results[1]) end
end

function Pool:apply_async(fn, args, opts)
  check_fn(fn, "apply_async")
  if args ~= nil and type(args) ~= "table" then argerror(2, "apply_async", "args must be a table") end
  local job = self:_new_job("apply_async", opts)
  job._on_chunk = apply_chunk
  local fid = self:_fid(fn)
  self.core:submit(job._id, 1, fid, 1, 1, F_STAR, self._dumps({args or {}}, "args"))
  return job
end

function Pool:apply(fn, args)
  return self:apply_async(fn, args):get()
end

local function progress_line(job)
  local done, total = job._done, job._n
  local dt = core.time() - job._t0
  local rate = dt > 0 and done / dt or 0
  local eta = rate > 0 and (total - done) / rate or 0
  io.stderr:write(string.format("\r%d/%d  %.0f/s  ETA %.1fs ", done, total, rate, eta))
  if done == total then io.stderr:write("\n") end
end

-- A chunk of results, or its error; results == nil: already filed by
-- map_payload.
local function map_chunk(job, _, first, n, results, err)
  if err then return job:_finish(nil, err) end
  local out = job._results
  if results then
    for i = 1, n do out[first + i - 1] = results[i] end
  end
  job._left = job._left - 1
  job._done = job._done + n
  if job._progress then progress_line(job) end
  if job._left == 0 then job:_finish(out) end
end

-- Files a pickled chunk of results straight into job._results.
local function map_payload(job, k, first, n, payload)
  if job._ready then return end
  local ok, err = pcall(loads_into, payload, job._results, first - 1, n)
  if ok then return map_chunk(job, k, first, n) end
  map_chunk(job, k, first, n, nil, err)
end

function Pool:_map_async(fname, fn, list, cs_or_opts, opts, star)
  check_fn(fn, fname)
  if type(list) ~= "table" then argerror(2, fname, "table expected, got " .. type(list)) end
  local chunksize, o = chunk_opts(cs_or_opts, fname)
  local n = #list
  if star then
    for i = 1, n do
      if type(list[i]) ~= "table" then argerror(2, fname, "item " .. i .. " is not an argument list") end
    end
  end
  -- callbacks may come in the options table given in chunksize's place
  local job = self:_new_job(fname, opts or (type(cs_or_opts) == "table" and cs_or_opts or nil))
  job._results, job._on_chunk, job._done, job._n = result_list(n), map_chunk, 0, n
  job._on_payload = map_payload
  job._progress = o.progress and CP.isatty(2) or false
  job._t0 = core.time()
  job._left = self:_submit_list(job, fn, list, n, chunksize, star)
  if job._left == 0 then job:_finish({}) end
  return job
end

--- _add_map_methods(class): map, map_async, starmap, starmap_async, imap
-- and imap_unordered over the class's _map_async and _imap (Pool and
-- RedisPool share them).
function M._add_map_methods(cls)
  function cls:map_async(fn, list, chunksize, opts)
    return self:_map_async("map_async", fn, list, chunksize, opts, false)
  end
  function cls:map(fn, list, chunksize)
    return self:_map_async("map", fn, list, chunksize, nil, false):get()
  end
  function cls:starmap_async(fn, list, chunksize, opts)
    return self:_map_async("starmap_async", fn, list, chunksize, opts, true)
  end
  function cls:starmap(fn, list, chunksize)
    return self:_map_async("starmap", fn, list, chunksize, nil, true):get()
  end
  --- imap(fn, list_or_iterator [, chunksize [, timeout]]): results in order.
  function cls:imap(fn, src, chunksize, timeout)
    return self:_imap("imap", fn, src, chunksize, timeout, true)
  end
  --- imap_unordered(...): results as they finish.
  function cls:imap_unordered(fn, src, chunksize, timeout)
    return self:_imap("imap_unordered", fn, src, chunksize, timeout, false)
  end
end
M._add_map_methods(Pool)

---------------------------------------------------------------- imap

-- An input that is a list or an iterator function, read lazily.
local function input_reader(src, fname)
  if type(src) == "table" then
    local i, n = 0, #src
    return function() i = i + 1; if i <= n then return true, src[i] end end
  elseif type(src) == "function" then
    return function()
      local v = src()
      if v == nil then return nil end
      return true, v
    end
  end
  argerror(2, fname, "table or iterator function expected, got " .. type(src))
end

local function imap_chunk(job, k, _, n, results, err)
  if err then
    job._errors[k] = err
  else
    job._chunks[k] = {n = n, results = results}
  end
  job._narrived = job._narrived + 1
  job._arrived[job._narrived] = k
end

function Pool:_imap(fname, fn, src, chunksize, timeout, ordered)
  check_fn(fn, fname)
  local next_item = input_reader(src, fname)
  chunksize = check_chunksize(chunksize, fname) or 1
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    argerror(4, fname, "timeout must be a number >= 0")
  end
  local job = self:_new_job(fname)
  job._chunks, job._errors, job._arrived, job._narrived = {}, {}, {}, 0
  job._on_chunk = imap_chunk
  local fid, k, first, exhausted = self:_fid(fn), 0, 1, false
  local pool, c = self, self.core
  -- Queues one chunk; false once the input is exhausted. An input that
  -- raises ends there: its error comes after the results of the items
  -- read before it (Python's test_imap_handle_iterable_exception), and
  -- never out of another job's wait.
  local function feed()
    if exhausted or job._ready then return false end
    local args, m = {}, 0
    for _ = 1, chunksize do
      local okc, ok, v = pcall(next_item)
      if not okc then
        job._input_error, exhausted = ok, true
        return false                    -- the partial chunk is dropped
      end
      if not ok then exhausted = true break end
      m = m + 1
      args[m] = v
    end
    if m == 0 then return false end
    if not c:has_fn(fid) then fid = pool:_fid(fn) end
    k = k + 1
    local payload = pool._list(args, m, "args")
    c:submit(job._id, k, fid, first, m, 0, payload, true)   -- _feed dispatches
    free_bytes(payload)
    first = first + m
    return not exhausted
  end
  self.feeders[#self.feeders + 1] = feed
  local want, pos, buf, bi = 1, 0, nil, 0
  local function finish(e)
    job._ready = true
    pool.jobs[job._id] = nil
    if pool.core then pool.core:drop(job._id) end
    exhausted = true
    if e then error(e, 0) end
  end
  return function()
    local deadline = timeout and core.time() + timeout
    while true do
      if buf and bi < buf.n then
        bi = bi + 1
        return buf.results[bi]
      end
      buf = nil
      if job._ready then return nil end
      if ordered then
        if job._errors[want] then finish(job._errors[want]) end
        local ch = job._chunks[want]
        if ch then
          job._chunks[want] = nil
          want, buf, bi = want + 1, ch, 0
        elseif exhausted and want > k then
          return finish(job._input_error)
        end
      else
        local ck = job._arrived[pos + 1]
        if ck then
          pos = pos + 1
          job._arrived[pos] = nil
          if job._errors[ck] then finish(job._errors[ck]) end
          buf, bi = job._chunks[ck], 0
          job._chunks[ck] = nil
        elseif exhausted and pos >= k then
          return finish(job._input_error)
        end
      end
      if not buf then
        if pool._state == "done" then finish(new_error("closed", "pool was terminated")) end
        local left = deadline and deadline - core.time()
        if left and left <= 0 then
          error(new_error("timeout", string.format("no result within %gs", timeout)), 2)
        end
        pool:_step(left)
      end
    end
  end
end


---------------------------------------------------------------- life cycle

-- Work queued, still to be read from an input, or in a worker's hands.
function Pool:_busy()
  if self.feeders[1] then return true end
  local q, f = self.core:queued()
  return q + f > 0
end

function Pool:close()
  if self._state == "run" then self._state = "close" end
end

-- Ends every worker: channels closed first (an idle worker returns), then
-- terminate, and kill after grace seconds.
local function stop_workers(self, grace)
  for _, w in pairs(self.workers) do pcall(w.h.terminate or w.h.kill) end
  local deadline = core.time() + grace
  for _, w in pairs(self.workers) do
    if not w.h.join(math.max(0, deadline - core.time())) then
      pcall(w.h.kill)
      w.h.join(2)
    end
  end
end

-- Forgets the fds the core owns (it may already have closed them, when
-- the garbage collector finalized it first).
local function forget_fds(self)
  for _, w in pairs(self.workers) do P._parent_only(w.fd, false) end
  if self.ep then
    P._parent_only(self.ep, false)
    if all_ep then pcall(pipe.epoll_del, all_ep, self.ep) end
  end
end

local function release(self)
  forget_fds(self)
  for _, w in pairs(self.workers) do
    if w.h.close then pcall(w.h.close) end
  end
  self.workers = {}
  if self.core then
    self.core:close()
    self.core = nil
  end
  self._state = "done"
  live_pools[self] = nil
  for _, job in pairs(self.jobs) do
    job:_finish(nil, new_error("closed", "pool was terminated before the task finished"))
  end
end

--- terminate(): stops the workers now; unfinished tasks fail with `closed`.
function Pool:terminate()
  if self._state == "done" then return end
  if self._owner ~= getpid() then
    self._state = "done"     -- a forked child's copy: not ours to stop
    return
  end
  self._state = "terminate"
  forget_fds(self)
  if self.core then pcall(self.core.close, self.core) end  -- idle workers see EOF
  stop_workers(self, 1)
  release(self)
end

--- join([timeout]) -> true once the queued work is done and the workers
-- have exited; false on timeout. The pool must be closed first.
function Pool:join(timeout)
  if self._state == "run" then error("join before close: call pool:close() first", 2) end
  if self._state == "done" then return true end
  local deadline = timeout and core.time() + timeout
  local function left()
    return deadline and math.max(0, deadline - core.time())
  end
  while self:_busy() do
    if deadline and left() <= 0 then return false end
    self:_step(left())
  end
  self._stopping = true
  for slot in pairs(self.workers) do self.core:stop(slot) end
  while next(self.workers) do
    if deadline and left() <= 0 then return false end
    self:_step(left())
  end
  release(self)
  return true
end

core.atexit(function()
  for pool in pairs(live_pools) do pcall(Pool.terminate, pool) end
  if all_ep then
    P._parent_only(all_ep, false)
    proc.close(all_ep)
    all_ep = nil
  end
end)

M.AsyncResult = AsyncResult
M._Pool = Pool
M._live_pools = live_pools

local function poll_pools(timeout)
  local n = 0
  for pool in pairs(live_pools) do
    if pool._state ~= "done" then n = n + pool:poll(timeout) timeout = 0 end
  end
  return n
end

--- _poll_all(timeout): drives every live pool of this state once; waits
-- (up to timeout) only in the first. Returns the events handled. A
-- callback that raises does not stop the others: once every pool had its
-- turn, the first callback error is raised (the C host's lmp_poll
-- returns -1 with it) instead of being printed.
function M._poll_all(timeout)
  local outer, errs = cb_errors, {}
  cb_errors = errs
  local ok, n = pcall(poll_pools, timeout)
  cb_errors = outer
  if not ok then error(n, 0) end
  local e = errs[1]
  if e ~= nil then
    if #errs > 1 and type(e) == "string" then
      e = string.format("%s (and %d more callback errors)", e, #errs - 1)
    end
    error(e, 0)
  end
  return n
end

--- _fileno_all() -> one epoll fd, readable whenever some live pool of this
-- state has work for _poll_all (for a C host's own loop).
function M._fileno_all()
  if not all_ep then
    all_ep = pipe.epoll_new()
    P._parent_only(all_ep)
    for pool in pairs(live_pools) do
      if pool.ep and pool._state ~= "done" then pipe.epoll_add(all_ep, pool.ep) end
    end
  end
  return all_ep
end

return M
