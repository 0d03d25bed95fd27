--- lmp.process: Process, fork hygiene, start methods and contexts.
--
-- Public (see docs/api/process.md): Process, current_process,
-- parent_process, active_children, cpu_count, set_start_method,
-- get_start_method, get_context, set_executable, atfork.
--
-- Interface used by the rest of lmp (pool, prefork, managers):
--   P._fork{name=, daemon=, allow_threads=, reap=, pidfd=}
--       -> pid in the parent, 0 in the child. All of lmp's fork hygiene:
--       refuses while lmp threads run (unless allow_threads); makes sure
--       the authkey exists (so children share it); flushes io.stdout and
--       io.stderr; runs atfork prepare handlers (reverse order); forks in C
--       (PR_SET_PDEATHSIG(SIGKILL) + getppid() re-check, signal handlers
--       and mask reset in the child); in the child closes every fd
--       registered with _parent_only, reseeds math.random, sets
--       current_process() (name, pid, daemon) and parent_process(), runs
--       child handlers; in the parent runs parent handlers.
--       The parent reaps the child opportunistically (no zombie) unless
--       reap = false (then the caller must waitpid it; P._status below
--       gives the exit code of a reaped one). pidfd = true adds a second
--       result: a close-on-exec pidfd the caller owns (nil without kernel
--       support). Code in the child must end with P._exit(code).
--   P._exit(code)        flushes stdio and _exits: never runs the parent's
--                        atexit handlers or lua_close.
--   P._parent_only(fd [, false])  registers (unregisters) an fd that fork
--                        children close at once (a pool's master ends).
--   P._status(pid)       exit code of a _fork child that ended (consumed),
--                        false while it runs, nil if unknown.
--   P._reap_all()        reaps every child of ours that ended.
--   P._spawn_fds         while a spawn's arguments are pickled, a list that
--                        __pickle hooks add their fds to (see lmp.pipe).
--   P._authkey()         the 32-byte authkey (current_process().authkey).
local core = require "lmp.core"   -- first: it registers lmp.c.*
local C = require "lmp.c.proc"

local M = {}

local me = {name = "MainProcess", pid = C.getpid(), daemon = false}
local parent_info = nil               -- {pid=, name=} in a child
local counter = 0                     -- for "Process-N" names
local start_method = "fork"
local executable = nil                -- spawn's interpreter; nil: /proc/self/exe
local authkey = nil
local handlers = {}                   -- atfork {prepare=, parent=, child=}
local parent_only = {}                -- fd -> true
local children = {}                   -- pid -> Process, or true (a _fork child)
local statuses, nstatuses = {}, 0     -- pid -> exit code of reaped _fork children
local unpack = table.unpack or unpack

local function pcall_handler(f, what)
  local ok, err = pcall(f)
  if not ok then
    io.stderr:write("lmp: atfork ", what, " handler failed: ", tostring(err), "\n")
  end
end

--- atfork{prepare=, parent=, child=}: handlers run around every fork lmp
-- performs; prepare in reverse registration order, the others in order.
function M.atfork(t)
  if type(t) ~= "table" then
    error("bad argument #1 to 'atfork' (table expected)", 2)
  end
  for _, k in ipairs{"prepare", "parent", "child"} do
    if t[k] ~= nil and type(t[k]) ~= "function" then
      error("bad argument #1 to 'atfork' (" .. k .. " must be a function)", 2)
    end
  end
  handlers[#handlers + 1] = t
end

function M._parent_only(fd, on)
  if type(fd) ~= "number" then
    error("bad argument #1 to '_parent_only' (fd expected)", 2)
  end
  parent_only[fd] = (on ~= false) or nil
end

function M._authkey()
  if not authkey then authkey = C.random_bytes(32) end
  return authkey
end

-- Seeds math.random from the OS's random source: every child draws its
-- own sequence (a forked child would otherwise repeat its parent's).
local function reseed()
  local b = C.random_bytes(8)
  local a1, a2, a3, a4, b1, b2, b3, b4 = b:byte(1, 8)
  local hi = ((a1 * 256 + a2) * 256 + a3) * 128 + a4 % 128
  local lo = ((b1 * 256 + b2) * 256 + b3) * 128 + b4 % 128
  if math.type then math.randomseed(hi, lo) else math.randomseed(hi + lo) end
end

local function check_threads(opts)
  local th = package.loaded["lmp.thread"]
  local live = type(th) == "table" and th._live_threads and th._live_threads() or 0
  if live > 0 and not opts.allow_threads then
    error(string.format("refusing to fork while %d lmp thread(s) run: a forked "
      .. "child would inherit locks held by threads that do not exist in it "
      .. "(pass allow_threads = true to override)", live), 3)
  end
end

---------------------------------------------------------------- reaping
-- No SIGCHLD handler (an embedded host keeps its own): lmp waits for its
-- own pids only (never waitpid(-1)), whenever its process functions run.

local function remember_status(pid, code)
  if nstatuses >= 4096 then statuses, nstatuses = {}, 0 end  -- nobody asks
  statuses[pid] = code
  nstatuses = nstatuses + 1
end

--- Reaps every child of ours that has ended (no zombies, no join needed).
local function reap_all()
  for pid, p in pairs(children) do
    local done, code
    if p ~= true and rawget(p, "_fs") then   -- the forkserver's child
      p:_poll()
      done = rawget(p, "_exitcode") ~= nil
      code = rawget(p, "_exitcode")
    else
      done, code = C.poll(pid)
    end
    if done ~= false then             -- ended (true) or not ours any more (nil)
      children[pid] = nil
      if p == true then
        if done then remember_status(pid, code) end
      elseif rawget(p, "_exitcode") == nil then
        rawset(p, "_exitcode", code or 0)
      end
    end
  end
end
M._reap_all = reap_all

function M._status(pid)
  local code = statuses[pid]
  if code ~= nil then
    statuses[pid] = nil
    nstatuses = nstatuses - 1
    return code
  end
  local done, c = C.poll(pid)
  if done == false then return false end
  children[pid] = nil
  return c
end

---------------------------------------------------------------- fork

local function become_child(opts, parent)
  for fd in pairs(parent_only) do C.close(fd) end
  parent_only = {}
  children, statuses, nstatuses = {}, {}, 0
  parent_info = parent
  me = {name = opts.name or ("Process-" .. counter), pid = C.getpid(),
        daemon = opts.daemon and true or false}
  reseed()
  for i = 1, #handlers do
    if handlers[i].child then pcall_handler(handlers[i].child, "child") end
  end
end

function M._fork(opts)
  opts = opts or {}
  check_threads(opts)
  M._authkey()                        -- made once, here, so children share it
  C.trim()    -- free heap back to the system: a lighter fork, a lighter child
  for i = #handlers, 1, -1 do
    if handlers[i].prepare then pcall_handler(handlers[i].prepare, "prepare") end
  end
  local parent = {pid = me.pid, name = me.name}
  local ok, pid, pidfd = pcall(C.fork, opts.pidfd)
  if ok and pid == 0 then
    become_child(opts, parent)
    return 0
  end
  for i = 1, #handlers do
    if handlers[i].parent then pcall_handler(handlers[i].parent, "parent") end
  end
  if not ok then error(pid, 0) end    -- fork failed (an "os" error)
  if opts.reap ~= false then children[pid] = true end
  return pid, pidfd
end

-- C.fork and C.exit flush every C stream (fflush(NULL)), whatever the
-- script did to io.stdout or io.stderr.
function M._exit(code)
  C.exit(code or 0)
end

-- Resolves a target given as "module:function" (spawn-friendly).
local function resolve_target(t)
  if type(t) ~= "string" then return t end
  local mod, fn = t:match("^([%w_%.]+):([%w_]+)$")
  if not mod then error("target '" .. t .. "' is not 'module:function'", 0) end
  local f = require(mod)[fn]
  if type(f) ~= "function" then error("no function " .. t, 0) end
  return f
end

-- Runs the target in the child: 0, or 1 after printing the traceback. A
-- SIGTERM that reached it as an `interrupted` error (a spawn child runs
-- the lmp runtime's handlers) ends it by that signal, quietly, as it
-- would have ended without handlers: its parent sees exitcode -15.
local function run_target(target, args, name)
  local ok, err = xpcall(function()
    local f = resolve_target(target)
    return f(unpack(args, 1, args.n or #args))
  end, function(e)
    if core.is_error(e, "interrupted") and e.signal == C.SIGTERM then return e end
    if type(e) == "table" then e = tostring(e) end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return 0 end
  if type(err) == "table" then C.die(C.SIGTERM) end
  io.stderr:write(string.format("Process %s (pid %d):\n%s\n", name, C.getpid(), err))
  io.stderr:flush()
  return 1
end

---------------------------------------------------------------- Process

local Process = {}
local Process_mt = {}

Process_mt.__index = function(self, k)
  if k == "exitcode" then
    self:_poll()
    return rawget(self, "_exitcode")
  end
  return Process[k]
end
Process_mt.__tostring = function(self)
  local state = not rawget(self, "pid") and "initial"
    or (self.exitcode == nil and "started" or "stopped exitcode=" .. self.exitcode)
  return string.format("lmp.Process(%s, %s%s)", self.name, state,
    self.daemon and " daemon" or "")
end

local function check_opts(o)
  if type(o) ~= "table" then error("bad argument #1 to 'Process' (table expected)", 3) end
  local t = o.target
  if type(t) ~= "function" and type(t) ~= "string" then
    error("bad argument #1 to 'Process' (target must be a function or 'module:function')", 3)
  end
  if o.args ~= nil and type(o.args) ~= "table" then
    error("bad argument #1 to 'Process' (args must be a table)", 3)
  end
  if o.name ~= nil and type(o.name) ~= "string" then
    error("bad argument #1 to 'Process' (name must be a string)", 3)
  end
  if o.pass_fds ~= nil then
    if type(o.pass_fds) ~= "table" then
      error("bad argument #1 to 'Process' (pass_fds must be a list of fds)", 3)
    end
    for _, fd in ipairs(o.pass_fds) do
      if type(fd) ~= "number" or fd < 0 or fd % 1 ~= 0 then
        error("bad argument #1 to 'Process' (pass_fds must be a list of fds)", 3)
      end
    end
  end
  local m = o.context and o.context.start_method
  if o.context ~= nil and m ~= "fork" and m ~= "spawn" and m ~= "forkserver" then
    error("bad argument #1 to 'Process' (context must come from get_context)", 3)
  end
end

--- Process{target, args, name, daemon, context, pass_fds, allow_threads}
function M.Process(o)
  check_opts(o)
  reap_all()
  counter = counter + 1
  local ctx = o.context
  return setmetatable({
    target = o.target,
    args = o.args or {},
    name = o.name or ("Process-" .. counter),
    daemon = o.daemon and true or false,
    _method = ctx and ctx.start_method or start_method,
    _pass_fds = o.pass_fds,
    _allow_threads = o.allow_threads,
    _creator = me.pid,
  }, Process_mt)
end

-- Polls this child (only its parent may: another process would see
-- ECHILD and could not tell the exit code).
function Process:_poll()
  local pid = rawget(self, "pid")
  if not pid or rawget(self, "_exitcode") ~= nil then return end
  if rawget(self, "_parent_pid") ~= me.pid then return end
  local h = rawget(self, "_fs")
  if h then                   -- the forkserver's child: its report
    local code = require("lmp.forkserver")._status(h)
    if code ~= nil then
      rawset(self, "_exitcode", code)
      children[pid] = nil
    end
    return
  end
  local done, code = C.poll(pid)
  if done ~= false then
    rawset(self, "_exitcode", code or 0)
    children[pid] = nil
  end
end

-- package.path for a spawn child: the parent's, with the main script's
-- directory first so the child can require the script's own modules.
function M._spawn_path()
  local script = rawget(_G, "arg") and arg[0]
  local dir = type(script) == "string" and script:match("^(.*)/[^/]*$")
  if not dir or package.path:find(dir .. "/?.lua", 1, true) then return package.path end
  return dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
end

-- lmp's Lua modules the parent has loaded: a spawn child loads them too
-- before unpickling, so the classes they register are known there.
local function loaded_modules()
  local out = {}
  for name in pairs(package.loaded) do
    if type(name) == "string" and name:match("^lmp%.[%w_]+$")
       and not name:match("^lmp%.c$") then
      out[#out + 1] = name
    end
  end
  table.sort(out)
  return out
end

-- Two frames go to a spawn child: who it is (so that its identity,
-- authkey and default codec are set before anything else is unpickled),
-- then the work.
-- Modules with state a spawn child must have before its target's
-- arguments are unpickled (a manager's authkeys) register here:
-- M._spawn_hooks[modname] = save() -> state; the child calls
-- require(modname)._spawn_restore(state).
M._spawn_hooks = {}

local function spawn_extras()
  local out = {}
  for modname, save in pairs(M._spawn_hooks) do out[modname] = save() end
  return out
end

local function spawn_payloads(self, pickle)
  local who = pickle.dumps({
    name = self.name, daemon = self.daemon, authkey = M._authkey(),
    parent = {pid = me.pid, name = me.name}, start_method = self._method,
    path = M._spawn_path(), cpath = package.cpath, extras = spawn_extras(),
    codec = pickle._codec_state(),    -- lmp.set_codec's switch, like the authkey
  }, {name = "process identity"})
  M._spawn_fds = {}
  local ok, work = pcall(pickle.dumps, {target = self.target, args = self.args},
                         {name = "process target and args"})
  local fds = M._spawn_fds
  M._spawn_fds = nil
  if not ok then error(work, 0) end
  for _, fd in ipairs(self._pass_fds or {}) do fds[#fds + 1] = fd end
  return who, work, fds
end

local function spawn_process(self)
  local pickle = require "lmp.pickle"
  local pipe = require "lmp.c.pipe"
  require "lmp.pipe"
  local who, work, fds = spawn_payloads(self, pickle)
  local rfd, wfd = pipe.socketpair()
  fds[#fds + 1] = rfd
  local mods = {}
  for i, m in ipairs(loaded_modules()) do mods[i] = string.format("%q", m) end
  local boot = string.format("package.path=%q package.cpath=%q "
    .. "require('lmp.process')._spawn_main(%d,{%s})", package.path,
    package.cpath, rfd, table.concat(mods, ","))
  local ok, pid, pidfd = pcall(C.spawn, {executable or C.self_exe(), "-e", boot}, fds)
  C.close(rfd)
  local conn = pipe.wrap(wfd)
  if not ok then conn:close() error(pid, 0) end
  children[pid] = self                -- reaped even if the send below fails
  local sent, err = pcall(function()
    conn:send_frame(1, who, 30)
    conn:send_frame(1, work, 30)
  end)
  conn:close()
  if not sent then
    C.signal(pidfd, pid, C.SIGKILL)
    if pidfd then C.close(pidfd) end
    error(err, 0)
  end
  return pid, pidfd
end

-- Spawn and forkserver children: reads the identity and the work from
-- conn (mods: the parent's lmp modules, loaded before the work is
-- unpickled), then runs the target and exits.
local function child_main(conn, mods)
  local pickle = require "lmp.pickle"
  require "lmp.pipe"                  -- registers the Connection class
  local ok, t = pcall(function()
    local _, who = conn:recv_frame(60)
    who = pickle.loads(who)
    package.path, package.cpath = who.path, who.cpath
    me = {name = who.name, pid = C.getpid(), daemon = who.daemon}
    parent_info, authkey, start_method = who.parent, who.authkey, who.start_method
    pickle._codec_restore(who.codec)
    reseed()
    for _, m in ipairs(mods or {}) do pcall(require, m) end
    for modname, state in pairs(who.extras or {}) do
      require(modname)._spawn_restore(state)
    end
    local _, work = conn:recv_frame(60)
    return pickle.loads(work)
  end)
  conn:close()
  if not ok then
    io.stderr:write(string.format("Process %s (pid %d): cannot start: %s\n",
      me.name, C.getpid(), tostring(t)))
    M._exit(1)
  end
  M._exit(run_target(t.target, t.args, me.name))
end

--- In a spawned child: reads its identity and target from fd, runs it.
function M._spawn_main(fd, mods)
  child_main(require("lmp.c.pipe").wrap(fd), mods)
end

--- In a child of the forkserver (lmp.forkserver): the same, from fd.
function M._forkserver_main(fd, mods)
  child_main(require("lmp.c.pipe").wrap(fd), mods)
end

-- The work goes to the forkserver's child as to a spawn child; the server
-- loads the program's lmp modules before it forks.
local function forkserver_process(self)
  local pickle = require "lmp.pickle"
  require "lmp.pipe"
  local who, work, fds = spawn_payloads(self, pickle)
  return require("lmp.forkserver")._start({who, work}, fds, loaded_modules())
end

function Process:start()
  if rawget(self, "pid") then error("cannot start a process twice", 2) end
  if self._creator ~= me.pid then
    error("can only start a process object created by the current process", 2)
  end
  reap_all()
  local pid, pidfd, fs
  if self._method == "spawn" then
    pid, pidfd = spawn_process(self)
  elseif self._method == "forkserver" then
    fs = forkserver_process(self)
    pid, pidfd = fs.pid, fs.pidfd
  else
    pid, pidfd = M._fork{name = self.name, daemon = self.daemon, pidfd = true,
                         allow_threads = self._allow_threads}
    if pid == 0 then          -- the child never returns into its parent's code
      local ok, code = pcall(function()
        start_method = "fork"   -- a child's default is how it was started (Python's test_context)
        rawset(self, "pid", me.pid)
        rawset(self, "_parent_pid", parent_info.pid)
        return run_target(self.target, self.args, self.name)
      end)
      M._exit(ok and code or 1)
    end
  end
  -- Python drops them too (test_lose_target_ref): the child has its copy.
  rawset(self, "target", nil)
  rawset(self, "args", nil)
  rawset(self, "_parent_pid", me.pid)
  rawset(self, "pid", pid)
  rawset(self, "_pidfd", pidfd)       -- for signals (never a recycled pid)
  if fs then                          -- sentinel: the server's report
    rawset(self, "_fs", fs)
    rawset(self, "sentinel", fs.sock)
    rawset(self, "_guard", C.guard(fs.sock))
    if pidfd then rawset(self, "_pidguard", C.guard(pidfd)) end
  elseif pidfd then
    rawset(self, "sentinel", pidfd)
    rawset(self, "_guard", C.guard(pidfd))   -- closes it if self is dropped
  end
  children[pid] = self
  return self
end

local function check_child(self, what)
  local pid = rawget(self, "pid")
  if not pid then error("cannot " .. what .. " a process that was not started", 3) end
  if pid == me.pid then error("a process cannot " .. what .. " itself", 3) end
  if self._parent_pid ~= me.pid then error("can only " .. what .. " a child process", 3) end
end

--- join([timeout]) -> true if the process has ended.
function Process:join(timeout)
  check_child(self, "join")
  if timeout ~= nil and type(timeout) ~= "number" then
    error("bad argument #1 to 'join' (number or nil expected)", 2)
  end
  reap_all()
  local deadline = timeout and core.time() + timeout
  local pipe = require "lmp.c.pipe"
  while true do
    self:_poll()
    if rawget(self, "_exitcode") ~= nil then return true end
    local left = deadline and deadline - core.time()
    if left and left <= 0 then return false end
    if rawget(self, "sentinel") then
      pipe.poll_fds({self.sentinel}, left and math.min(left, 1) or 1)
    else
      core.sleep(math.min(left or 0.01, 0.01))
    end
  end
end

function Process:is_alive()
  if rawget(self, "pid") == me.pid then return true end
  if not rawget(self, "pid") then return false end
  check_child(self, "test")
  reap_all()
  self:_poll()
  return rawget(self, "_exitcode") == nil
end

local function signal(self, sig)
  if rawget(self, "pid") and self:is_alive() then
    C.signal(rawget(self, "_pidfd"), self.pid, sig)
  end
end
--- terminate(): SIGTERM; kill(): SIGKILL. No-ops once the process ended.
function Process:terminate() signal(self, C.SIGTERM) end
function Process:kill() signal(self, C.SIGKILL) end

--- close(): releases the sentinel. Raises while the process runs.
function Process:close()
  if self:is_alive() then error("cannot close a process while it is running", 2) end
  for _, k in ipairs{"_guard", "_pidguard"} do
    local g = rawget(self, k)
    if g then g:close() end
    rawset(self, k, nil)
  end
  rawset(self, "sentinel", nil)
  rawset(self, "_pidfd", nil)
end

---------------------------------------------------------------- helpers

function M.current_process()
  return {name = me.name, pid = me.pid, daemon = me.daemon, authkey = M._authkey()}
end

function M.parent_process()
  return parent_info and {name = parent_info.name, pid = parent_info.pid} or nil
end

--- active_children() -> the Process objects of this process still running
-- (reaps those that ended).
function M.active_children()
  reap_all()
  local out = {}
  for _, p in pairs(children) do
    if p ~= true then out[#out + 1] = p end
  end
  table.sort(out, function(a, b) return a.pid < b.pid end)
  return out
end

M.cpu_count = C.cpu_count

local function check_method(m, fname)
  if m ~= "fork" and m ~= "spawn" and m ~= "forkserver" then
    error("bad argument #1 to '" .. fname .. "' ('fork', 'spawn' or 'forkserver' expected)", 3)
  end
end

function M.set_start_method(m)
  check_method(m, "set_start_method")
  start_method = m
end

function M.get_start_method() return start_method end

--- set_executable(path): the interpreter spawn children run (default: the
-- running one, /proc/self/exe). An embedding host must set it to an lmp
-- runtime or a Lua interpreter that can require lmp.
function M._executable() return executable or C.self_exe() end

function M.set_executable(path)
  if path ~= nil and type(path) ~= "string" then
    error("bad argument #1 to 'set_executable' (string or nil expected)", 2)
  end
  executable = path
end

-- Constructors whose first argument is an options table that takes a
-- context (the others are forwarded as they are).
local takes_context = {Pool = true, Process = true}

local contexts = {}

--- get_context([method]): an object with every constructor of lmp bound to
-- that start method: ctx.Process, ctx.Pool, ctx.Queue, ...
function M.get_context(method)
  if method == nil then method = start_method end
  check_method(method, "get_context")
  if contexts[method] then return contexts[method] end
  local ctx = {start_method = method}
  function ctx.get_start_method() return method end
  -- Python: a context is its own context, and its method is fixed
  function ctx.get_context(m, m2)
    if rawequal(m, ctx) then m = m2 end     -- ctx:get_context(...)
    if m == nil then return ctx end
    return M.get_context(m)
  end
  function ctx.set_start_method()
    error("cannot set the start method of a context (lmp.set_start_method sets the default)", 2)
  end
  setmetatable(ctx, {__index = function(t, name)
    local v = require("lmp")[name]
    if type(v) ~= "function" then return v end
    local g = v
    if takes_context[name] then
      g = function(o, ...)
        if o == nil then o = {} end
        if type(o) == "table" and o.context == nil then
          local c = {}
          for k, x in pairs(o) do c[k] = x end
          c.context = t
          o = c
        end
        return v(o, ...)
      end
    end
    -- Python writes ctx.Queue(); in Lua ctx:Queue() comes as naturally
    local function f(first, ...)
      if rawequal(first, t) then return g(...) end
      return g(first, ...)
    end
    rawset(t, name, f)
    return f
  end, __tostring = function() return "lmp.Context(" .. method .. ")" end})
  contexts[method] = ctx
  return ctx
end

-- At the end of the main program (or of a child that ends with lua_close):
-- stop daemon children, wait for the others (Python's rule), reap.
core.atexit(function()
  if me.pid ~= C.getpid() then return end
  reap_all()
  for _, p in pairs(children) do
    if p ~= true and p.daemon then signal(p, C.SIGTERM) end
  end
  for _, p in pairs(children) do
    if p ~= true and p.daemon and not p:join(1) then signal(p, C.SIGKILL) p:join(1) end
  end
  for _, p in pairs(children) do
    if p ~= true and not p.daemon then p:join() end
  end
  reap_all()
end)

return M
