--- lmp.pool: Pool and AsyncResult.
--
-- One channel per worker and one loop in the master (see DESIGN.md):
-- each worker has its own socketpair, so the master knows exactly which
-- chunks a worker holds; when a worker dies (its sentinel fd becomes
-- readable) those chunks fail with `worker_lost` and a new worker takes
-- its place. The loop (`step`) runs only inside map/get/join/poll/imap,
-- never behind the caller's back; `fileno()` is its epoll fd, readable
-- whenever the loop has something to do.
--
-- Wire protocol (pickled tables, one frame each):
--   master -> worker  {"f", fid, fn}                     define a function
--                     {"t", job, chunk, fid, first, args, star, ack}
--                     {"q"}                              finish and exit
--   worker -> master  {"s", job, chunk}    started (only when ack was asked)
--                     {"r", job, chunk, n, results, err}
-- A chunk sent to an idle worker asks for "s": if that worker turns out
-- to be dead before it started (killed while idle), the chunk goes to
-- another worker instead of failing. Chunks a dead worker held behind
-- the one it was running never started either, and are requeued too.
--
-- Launchers make the workers: processes here; lmp.ThreadPool passes its
-- own launcher to _new_pool. launcher(pool, index, child_fd, info) starts
-- a worker running _worker_main(child_fd, info) and returns a handle
--   {sentinel = fd readable once the worker ended, name =, pid = or nil,
--    kill = fn(), exit_status = fn() -> nil while running, join = fn(t),
--    close = fn()}
local core = require "lmp.core"   -- first: it registers lmp.c.*
local C = require "lmp.c.pipe"
local pickle = require "lmp.pickle"
local P = require "lmp.process"
local getpid = require("lmp.c.proc").getpid

local M = {}
local FRAME = C.PICKLE
local unpack = table.unpack or unpack
local live_pools = setmetatable({}, {__mode = "k"})

local function new_error(kind, msg, fields)
  return core.error(kind, msg, fields)
end

local function argerror(n, fname, msg)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

---------------------------------------------------------------- worker side

local function traceback_handler(e)
  if type(e) == "table" and core.is_error(e) then
    return {message = tostring(e.message), kind = e.kind,
            traceback = debug.traceback("", 2)}
  end
  return {message = tostring(e), traceback = debug.traceback("", 2)}
end

-- Runs f over a chunk inside one xpcall (a closure per chunk, not per
-- item); on error, i tells which item raised.
local function run_chunk(f, args, star, first, who)
  local results, n, i = {}, #args, 0
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
  if ok then return results, n, nil end
  err.index = first + i - 1
  err.worker = who
  return results, n, err
end

--- Runs a worker's loop on channel fd until told to stop, the master
-- goes away, or maxtasks chunks are done. Returns normally (the launcher
-- decides how the worker ends).
function M._worker_main(fd, info)
  local conn = C.wrap(fd)
  local dumps = pickle.encoder(info.codec or "json")
  local who = P.current_process().name
  if info.initializer then
    info.initializer(unpack(info.initargs or {}))
  end
  local fns, done = {}, 0
  while true do
    local ok, _, payload = pcall(conn.recv_frame, conn)
    if not ok then break end                       -- master gone
    local msg = pickle.loads(payload)
    local op = msg[1]
    if op == "t" then
      if msg[8] and not pcall(conn.send_frame, conn, FRAME, dumps({"s", msg[2], msg[3]})) then
        break
      end
      local results, n, err = run_chunk(fns[msg[4]], msg[6], msg[7], msg[5], who)
      local okd, out = pcall(dumps, {"r", msg[2], msg[3], n, results, err})
      if not okd then
        out = dumps({"r", msg[2], msg[3], n, nil, {message = tostring(out),
          kind = "pickle", index = msg[5], worker = who}})
      end
      if not pcall(conn.send_frame, conn, FRAME, out) then break end
      done = done + 1
      if info.maxtasks and done >= info.maxtasks then break end
    elseif op == "f" then
      fns[msg[2]] = msg[3]
    else
      break
    end
  end
  conn:close()
end

local function launch_process(pool, index, child_fd, info)
  local name = "PoolWorker-" .. index
  local p
  if pool._ctx and pool._ctx.start_method == "spawn" then
    p = P.Process{target = "lmp.pool:_worker_main", args = {child_fd, info},
                  name = name, daemon = true, context = pool._ctx,
                  pass_fds = {child_fd}}
  else
    p = P.Process{target = M._worker_main, args = {child_fd, info},
                  name = name, daemon = true}
  end
  p:start()
  return {
    sentinel = p.sentinel, name = name, pid = p.pid,
    kill = function() p:kill() end,
    terminate = function() p:terminate() end,
    exit_status = function() return p.exitcode end,
    join = function(t) return p:join(t) end,
    close = function() if not p:is_alive() then p:close() end end,
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

--- wait([timeout]) -> true once the result is ready.
function AsyncResult:wait(timeout)
  local pool = self._pool
  local deadline = timeout and core.time() + timeout
  while not self._ready do
    local left = deadline and deadline - core.time()
    if left and left <= 0 then return false end
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
  if self._ready or self._sent > 0 then return false end
  self._pool:_drop_job(self)
  self:_finish(nil, new_error("cancelled", "task was cancelled"))
  return true
end

function AsyncResult:_finish(value, err)
  if self._ready then return end
  self._ready, self._value, self._error = true, value, err
  self._pool.jobs[self._id] = nil
  local cb = err and self._error_callback or (not err and self._callback)
  if cb then
    local ok, e = pcall(cb, err or value)
    if not ok then io.stderr:write("lmp: pool callback failed: ", tostring(e), "\n") end
  end
end

---------------------------------------------------------------- Pool

local Pool = {}
Pool.__index = Pool

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

function Pool:_start_worker(index)
  local a, b = C.socketpair()
  P._parent_only(a)
  local ok, h = pcall(self._launch, self, index, b, self._info)
  C.wrap(b):close()                               -- the child's end
  if not ok then
    P._parent_only(a, false)
    C.wrap(a):close()
    error(h, 0)
  end
  local w = {index = index, h = h, conn = C.wrap(a), fd = a, inflight = {},
             ninflight = 0, fids = {}, sent = 0, name = h.name}
  self.workers[index] = w
  self.by_fd[a] = w
  C.epoll_add(self.ep, a)
  if h.sentinel then
    self.by_fd[h.sentinel] = w
    C.epoll_add(self.ep, h.sentinel)
  end
  return w
end

function M._new_pool(opts, launcher)
  if opts ~= nil and type(opts) ~= "table" then argerror(1, "Pool", "table expected") end
  opts = opts or {}
  local n = opts.processes or opts.threads or P.cpu_count()
  if math.type and math.type(n) ~= "integer" and n % 1 ~= 0 then argerror(1, "Pool", "processes must be an integer") end
  if type(n) ~= "number" or n < 1 then argerror(1, "Pool", "processes must be >= 1") end
  local maxt = opts.maxtasksperchild
  if maxt ~= nil and (type(maxt) ~= "number" or maxt < 1) then
    argerror(1, "Pool", "maxtasksperchild must be >= 1 or nil")
  end
  if opts.initializer ~= nil and type(opts.initializer) ~= "function" then
    argerror(1, "Pool", "initializer must be a function")
  end
  local codec = opts.codec or "json"
  if codec ~= "json" and codec ~= "binary" then argerror(1, "Pool", "codec must be 'json' or 'binary'") end
  local self = setmetatable({
    n = math.floor(n), _launch = launcher, _ctx = opts.context,
    _owner = getpid(), _state = "run",
    _info = {codec = codec, initializer = opts.initializer,
             initargs = opts.initargs, maxtasks = maxt},
    _dumps = pickle.encoder(codec),
    ep = C.epoll_new(), workers = {}, by_fd = {}, jobs = {},
    queue = {}, qhead = 1, qtail = 0, feeders = {},
    fn_ids = setmetatable({}, {__mode = "k"}), fn_payload = {},
    next_fid = 0, next_job = 0, want_out = {},
  }, Pool)
  P._parent_only(self.ep)
  for i = 1, self.n do self:_start_worker(i) end
  live_pools[self] = true
  if newproxy then                         -- 5.1/LuaJIT: __gc on a proxy
    local proxy = newproxy(true)
    local ref = setmetatable({pool = self}, {__mode = "v"})
    getmetatable(proxy).__gc = function() if ref.pool then ref.pool:terminate() end end
    self._gc = proxy
  end
  return self
end

local pool_mt_gc = {__index = Pool,
  __gc = function(self) if self._state ~= "done" then pcall(Pool.terminate, self) end end,
  __close = function(self) self:terminate() end}
pool_mt_gc.__tostring = function(self)
  return string.format("lmp.Pool(%d workers, %s)", self.n, self._state)
end

function M.Pool(opts)
  local pool = M._new_pool(opts, launch_process)
  return setmetatable(pool, pool_mt_gc)
end

function Pool:fileno() return self.ep end

-- fn -> id, pickling each function once per pool.
function Pool:_fid(fn)
  local id = self.fn_ids[fn]
  if not id then
    self.next_fid = self.next_fid + 1
    id = self.next_fid
    self.fn_ids[fn] = id
    self.fn_payload[id] = self._dumps({"f", id, fn}, "function")
  end
  return id
end

function Pool:_send(w, payload)
  local left = w.conn:queue_frame(FRAME, payload)
  if left > 0 and not self.want_out[w.fd] then
    self.want_out[w.fd] = true
    C.epoll_mod(self.ep, w.fd, true)
  end
end

-- Sends one chunk (and its function, the first time) to worker w.
-- Returns false if the worker is gone (the chunk is then put back).
function Pool:_send_chunk(w, ch)
  local job = ch.job
  local ask = w.ninflight == 0
  local ok = pcall(function()
    if not w.fids[ch.fid] then
      self:_send(w, self.fn_payload[ch.fid])
      w.fids[ch.fid] = true
    end
    self:_send(w, self._dumps({"t", job._id, ch.k, ch.fid, ch.first, ch.args, ch.star, ask}, "args"))
  end)
  if not ok then
    self.qhead = self.qhead - 1            -- it never reached a worker
    self.queue[self.qhead] = ch
    return false
  end
  w.seq = (w.seq or 0) + 1
  ch.wseq, ch.ask, ch.started = w.seq, ask, false
  w.inflight[job._id .. ":" .. ch.k] = ch
  w.ninflight = w.ninflight + 1
  job._sent = job._sent + 1
  w.sent = w.sent + 1
  local maxt = self._info.maxtasks
  if maxt and w.sent >= maxt then w.retiring = true end
  return true
end

-- Sends queued chunks to workers with room (one in flight plus one ahead).
function Pool:_dispatch()
  local dead
  for _, w in pairs(self.workers) do
    while w.ninflight < 2 and not w.retiring do
      local ch = self:_next_chunk()
      if not ch then break end
      if not self:_send_chunk(w, ch) then
        dead = dead or {}
        dead[#dead + 1] = w
        break
      end
    end
  end
  for _, w in ipairs(dead or {}) do
    if self.workers[w.index] == w then self:_on_death(w) end
  end
  if dead then return self:_dispatch() end
end

function Pool:_next_chunk()
  while true do
    if self.qhead <= self.qtail then
      local ch = self.queue[self.qhead]
      self.queue[self.qhead] = nil
      self.qhead = self.qhead + 1
      if not ch.job._ready then return ch end
    else
      local feeder = self.feeders[1]
      if not feeder then return nil end
      if not feeder() then table.remove(self.feeders, 1) end
    end
  end
end

function Pool:_push_chunk(ch)
  self.qtail = self.qtail + 1
  self.queue[self.qtail] = ch
end

function Pool:_drop_job(job)
  for i = self.qhead, self.qtail do
    local ch = self.queue[i]
    if ch and ch.job == job then self.queue[i] = {job = {_ready = true}} end
  end
end

function Pool:_on_result(w, msg)
  local key = msg[2] .. ":" .. msg[3]
  local ch = w.inflight[key]
  if not ch then return end
  if msg[1] == "s" then ch.started = true return end
  w.inflight[key] = nil
  w.ninflight = w.ninflight - 1
  local job = ch.job
  if job._ready then return end
  if msg[6] then
    local e = msg[6]
    job._on_chunk(job, ch, nil, new_error(e.kind == "pickle" and "pickle" or "remote",
      string.format("task %d raised in %s: %s", e.index or 0, e.worker or w.name, e.message),
      {traceback = e.traceback, worker = e.worker or w.name, index = e.index,
       remote_kind = e.kind}))
  else
    job._on_chunk(job, ch, msg[5], nil, msg[4])
  end
end

function Pool:_on_death(w)
  local code = w.h.exit_status()
  if code == nil then
    if not w.h.join(0.5) then w.h.kill() w.h.join(1) end
    code = w.h.exit_status()
  end
  C.epoll_del(self.ep, w.fd)
  if w.h.sentinel then C.epoll_del(self.ep, w.h.sentinel) self.by_fd[w.h.sentinel] = nil end
  self.by_fd[w.fd] = nil
  self.want_out[w.fd] = nil
  P._parent_only(w.fd, false)
  w.conn:close()
  w.h.close()
  self.workers[w.index] = nil
  -- The oldest chunk is the one the worker may have been running; the
  -- others never started, nor did the oldest if it asked for "s" and got
  -- none. Those go back to the front of the queue, in order.
  local held = {}
  for _, ch in pairs(w.inflight) do held[#held + 1] = ch end
  table.sort(held, function(a, b) return a.wseq < b.wseq end)
  local lost = held[1] and not (held[1].ask and not held[1].started) and held[1]
  for i = #held, 1, -1 do
    local ch = held[i]
    if ch ~= lost and not ch.job._ready then
      self.qhead = self.qhead - 1
      self.queue[self.qhead] = ch
    end
  end
  for _, ch in ipairs{lost or nil} do
    if not ch.job._ready then
      ch.job._on_chunk(ch.job, ch, nil, new_error("worker_lost", string.format(
        "worker %s (pid %s) died with exit code %s while running task %d",
        w.name, tostring(w.h.pid), tostring(code), ch.first),
        {worker = w.name, pid = w.h.pid, exitcode = code, index = ch.first}))
    end
  end
  if self._state == "run" or self._state == "close" then
    self:_start_worker(w.index)
  end
end

-- One turn of the loop: waits up to timeout (nil: until something
-- happens) for worker output or deaths, handles them, dispatches.
function Pool:_step(timeout)
  self:_dispatch()
  local readable, writable = C.epoll_wait(self.ep, timeout)
  for _, fd in ipairs(writable) do
    local w = self.by_fd[fd]
    if w and w.fd == fd then
      local ok, left = pcall(w.conn.flush, w.conn)
      if ok and left == 0 then
        self.want_out[fd] = nil
        C.epoll_mod(self.ep, fd, false)
      end
    end
  end
  for _, fd in ipairs(readable) do
    local w = self.by_fd[fd]
    if w then
      if fd == w.fd then
        local ok, _, payload = pcall(w.conn.recv_frame, w.conn, 5)
        if ok then
          self:_on_result(w, pickle.loads(payload))
        elseif self.workers[w.index] == w then
          self:_on_death(w)
        end
      elseif self.workers[w.index] == w then
        -- sentinel: drain results already sent, then count the death
        while self.workers[w.index] == w and w.conn:poll(0) do
          local ok, _, payload = pcall(w.conn.recv_frame, w.conn, 1)
          if not ok then break end
          self:_on_result(w, pickle.loads(payload))
        end
        if self.workers[w.index] == w then self:_on_death(w) end
      end
    end
  end
  self:_dispatch()
  return #readable
end

--- poll([timeout]) runs due callbacks; never blocks longer than timeout
-- (0 or nil: not at all). Returns the number of events handled.
function Pool:poll(timeout)
  if self._state == "done" then return 0 end
  return self:_step(timeout or 0)
end

---------------------------------------------------------------- jobs

function Pool:_new_job(fname, opts)
  self:_check_open(fname)
  opts = opts or {}
  if opts.callback ~= nil and type(opts.callback) ~= "function" then
    argerror(3, fname, "callback must be a function")
  end
  if opts.error_callback ~= nil and type(opts.error_callback) ~= "function" then
    argerror(3, fname, "error_callback must be a function")
  end
  self.next_job = self.next_job + 1
  local job = setmetatable({_pool = self, _id = self.next_job, _ready = false,
    _sent = 0, _callback = opts.callback, _error_callback = opts.error_callback},
    AsyncResult)
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

-- Queues the chunks of list (1..n) for job; results gathered in order.
function Pool:_submit_list(job, fn, list, chunksize, star)
  local fid = self:_fid(fn)
  local n = #list
  chunksize = chunksize or default_chunksize(n, self.n)
  local k = 0
  for first = 1, n, chunksize do
    local args = {}
    for i = first, math.min(first + chunksize - 1, n) do args[#args + 1] = list[i] end
    k = k + 1
    self:_push_chunk({job = job, k = k, fid = fid, first = first, args = args, star = star})
  end
  return k
end

local function apply_finish(job, ch, results, err)
  local _ = ch
  if err then job:_finish(nil, err) else job:_finish(results[1]) end
end

function Pool:apply_async(fn, args, opts)
  check_fn(fn, "apply_async")
  if args ~= nil and type(args) ~= "table" then argerror(2, "apply_async", "args must be a table") end
  local job = self:_new_job("apply_async", opts)
  job._on_chunk = apply_finish
  self:_push_chunk({job = job, k = 1, fid = self:_fid(fn), first = 1,
                    args = {args or {}}, star = true})
  self:_dispatch()
  return job
end

function Pool:apply(fn, args)
  return self:apply_async(fn, args):get()
end

local function progress_line(job)
  if not job._progress then return end
  local lg = package.loaded["lmp.log"]
  if lg and lg.progress then return lg.progress(job._done, job._n, job._t0) end
  io.stderr:write(string.format("\r%d/%d", job._done, job._n))
  if job._done == job._n then io.stderr:write("\n") end
end

local function map_chunk(job, ch, results, err, n)
  if err then return job:_finish(nil, err) end
  local out = job._results
  for i = 1, n do out[ch.first + i - 1] = results[i] end
  job._left = job._left - 1
  job._done = job._done + n
  progress_line(job)
  if job._left == 0 then job:_finish(out) end
end

function Pool:_map_async(fname, fn, list, cs_or_opts, opts, star)
  check_fn(fn, fname)
  if type(list) ~= "table" then argerror(2, fname, "table expected, got " .. type(list)) end
  local chunksize, o = chunk_opts(cs_or_opts, fname)
  local job = self:_new_job(fname, opts)
  job._results, job._on_chunk, job._done, job._n = {}, map_chunk, 0, #list
  job._progress = o.progress and (os.getenv("TERM") ~= nil) and true or false
  job._t0 = core.time()
  if star then
    for i, a in ipairs(list) do
      if type(a) ~= "table" then argerror(2, fname, "item " .. i .. " is not an argument list") end
    end
  end
  job._left = self:_submit_list(job, fn, list, chunksize, star)
  if job._left == 0 then job:_finish({}) end
  self:_dispatch()
  return job
end

function Pool:map_async(fn, list, chunksize, opts)
  return self:_map_async("map_async", fn, list, chunksize, opts, false)
end

function Pool:map(fn, list, chunksize)
  return self:_map_async("map", fn, list, chunksize, nil, false):get()
end

function Pool:starmap_async(fn, list, chunksize, opts)
  return self:_map_async("starmap_async", fn, list, chunksize, opts, true)
end

function Pool:starmap(fn, list, chunksize)
  return self:_map_async("starmap", fn, list, chunksize, nil, true):get()
end

---------------------------------------------------------------- imap

-- An input that is a list or an iterator function, read lazily.
local function input_reader(src, fname)
  if type(src) == "table" then
    local i = 0
    return function() i = i + 1; if i <= #src then return true, src[i] end end, #src
  elseif type(src) == "function" then
    return function()
      local v = src()
      if v == nil then return nil end
      return true, v
    end
  end
  argerror(2, fname, "table or iterator function expected, got " .. type(src))
end

local function imap_chunk(job, ch, results, err, n)
  if err then
    job._errors[ch.k] = err
  else
    job._chunks[ch.k] = {first = ch.first, n = n, results = results}
  end
  job._narrived = job._narrived + 1
  job._arrived[job._narrived] = ch.k
end

function Pool:_imap(fname, fn, src, chunksize, timeout, ordered)
  check_fn(fn, fname)
  local next_item, total = input_reader(src, fname)
  chunksize = check_chunksize(chunksize, fname) or 1
  local job = self:_new_job(fname)
  job._chunks, job._errors, job._arrived, job._narrived = {}, {}, {}, 0
  job._on_chunk = imap_chunk
  local fid, k, first, exhausted = self:_fid(fn), 0, 1, false
  local pool = self
  -- Feeds one chunk; keeps a bounded window of chunks ahead of the reader.
  local function feed()
    if exhausted then return false end
    local args = {}
    for _ = 1, chunksize do
      local ok, v = next_item()
      if not ok then exhausted = true break end
      args[#args + 1] = v
    end
    if #args == 0 then return false end
    k = k + 1
    pool:_push_chunk({job = job, k = k, fid = fid, first = first, args = args})
    first = first + #args
    return not exhausted
  end
  self.feeders[#self.feeders + 1] = feed
  local _ = total
  local want, pos, buf, bi = 1, 0, nil, 0
  local function fail(e)
    job._ready = true
    pool.jobs[job._id] = nil
    pool:_drop_job(job)
    error(e, 0)
  end
  return function()
    while true do
      if buf and bi < buf.n then
        bi = bi + 1
        return buf.results[bi]
      end
      buf = nil
      if ordered then
        if job._errors[want] then fail(job._errors[want]) end
        local c = job._chunks[want]
        if c then
          job._chunks[want] = nil
          want, buf, bi = want + 1, c, 0
        elseif exhausted and want > k then
          job._ready = true
          pool.jobs[job._id] = nil
          return nil
        end
      else
        pos = pos + 1
        local ck = job._arrived[pos]
        if ck then
          job._arrived[pos] = nil
          if job._errors[ck] then fail(job._errors[ck]) end
          buf, bi = job._chunks[ck], 0
          job._chunks[ck] = nil
        else
          pos = pos - 1
          if exhausted and pos >= k then
            job._ready = true
            pool.jobs[job._id] = nil
            return nil
          end
        end
      end
      if not buf then
        if pool._state == "done" then fail(new_error("closed", "pool was terminated")) end
        local t0 = timeout and core.time()
        pool:_step(timeout)
        if timeout and core.time() - t0 >= timeout and not (job._chunks[want] or job._arrived[pos + 1]) then
          error(new_error("timeout", string.format("no result within %gs", timeout)), 2)
        end
      end
    end
  end
end

--- imap(fn, list_or_iterator [, chunksize [, timeout]]): results in order.
function Pool:imap(fn, src, chunksize, timeout)
  return self:_imap("imap", fn, src, chunksize, timeout, true)
end

--- imap_unordered(...): results as they finish.
function Pool:imap_unordered(fn, src, chunksize, timeout)
  return self:_imap("imap_unordered", fn, src, chunksize, timeout, false)
end

---------------------------------------------------------------- life cycle

-- Work queued, still to be read from an input, or in a worker's hands.
function Pool:_busy()
  if self.qhead <= self.qtail or self.feeders[1] then return true end
  for _, w in pairs(self.workers) do
    if w.ninflight > 0 then return true end
  end
  return false
end

function Pool:close()
  if self._state == "run" then self._state = "close" end
end

local function stop_workers(self, grace)
  for _, w in pairs(self.workers) do pcall(w.h.terminate or w.h.kill) end
  local deadline = core.time() + grace
  for _, w in pairs(self.workers) do
    if not w.h.join(math.max(0, deadline - core.time())) then
      w.h.kill()
      w.h.join(2)
    end
  end
end

local function release(self)
  for _, w in pairs(self.workers) do
    P._parent_only(w.fd, false)
    w.conn:close()
    pcall(w.h.close)
  end
  self.workers, self.by_fd = {}, {}
  if self.ep then
    P._parent_only(self.ep, false)
    C.wrap(self.ep):close()
    self.ep = nil
  end
  for _, job in pairs(self.jobs) do
    job:_finish(nil, new_error("closed", "pool was terminated before the task finished"))
  end
  self._state = "done"
  live_pools[self] = nil
end

--- terminate(): stops the workers now; unfinished tasks fail with `closed`.
function Pool:terminate()
  if self._state == "done" then return end
  if self._owner ~= getpid() then
    self._state = "done"     -- a forked child's copy: not ours to stop
    return
  end
  self._state = "terminate"
  stop_workers(self, 1)
  release(self)
end

--- join([timeout]): waits for the workers to finish the queued work and
-- exit; the pool must be closed (or terminated) first.
function Pool:join(timeout)
  if self._state == "run" then error("join before close: call pool:close() first", 2) end
  if self._state == "done" then return true end
  local deadline = timeout and core.time() + timeout
  while self:_busy() do
    local left = deadline and deadline - core.time()
    if left and left <= 0 then return false end
    self:_step(left)
  end
  for _, w in pairs(self.workers) do
    pcall(w.conn.send_frame, w.conn, FRAME, self._dumps({"q"}), 1)
  end
  for _, w in pairs(self.workers) do
    local left = deadline and math.max(0, deadline - core.time())
    if not w.h.join(left) then return false end
  end
  release(self)
  return true
end

core.atexit(function()
  for pool in pairs(live_pools) do pcall(Pool.terminate, pool) end
end)

M.AsyncResult = AsyncResult
M._Pool = Pool
M._live_pools = live_pools

--- Drives every live pool of this state once (for the embedding API).
function M._poll_all(timeout)
  local n = 0
  for pool in pairs(live_pools) do
    if pool._state ~= "done" then n = n + pool:poll(timeout) timeout = 0 end
  end
  return n
end

return M
