--- lmp.process: Process, fork hygiene, start methods and contexts.
--
-- Interface used by the rest of lmp (pool, prefork, managers):
--   P._fork{name=, daemon=, allow_threads=} -> pid in the parent (and a
--       pidfd, or nil), 0 in the child. It does all of lmp's fork hygiene:
--       refuses while lmp threads run, flushes stdio, runs atfork
--       handlers, closes fds registered with _parent_only in the child,
--       reseeds math.random, sets the child's identity.
--   P._exit(code)        ends a child without running the parent's atexit.
--   P._parent_only(fd [, false])  fds that fork children must close.
--   P._spawn_fds         while a spawn's arguments are pickled, a list that
--                        __pickle hooks add their fds to (pass_fds).
local core = require "lmp.core"   -- first: it registers lmp.c.*
local C = require "lmp.c.proc"

local M = {}

local me = {
  name = "MainProcess",
  pid = C.getpid(),
  daemon = false,
}
local parent_info = nil               -- {pid=, name=} in a child
local counter = 0                     -- for "Process-N" names
local start_method = "fork"
local authkey = nil
local handlers = {}                   -- atfork {prepare=, parent=, child=}
local parent_only = {}                -- fd -> true
local children = {}                   -- pid -> Process, until reaped

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
  parent_only[fd] = (on ~= false) or nil
end

local function reseed()
  local b = C.random_bytes(8)
  local a1, a2, a3, a4, b1, b2, b3, b4 = b:byte(1, 8)
  local hi = ((a1 * 256 + a2) * 256 + a3) * 128 + a4 % 128
  local lo = ((b1 * 256 + b2) * 256 + b3) * 128 + b4 % 128
  if math.type then math.randomseed(hi, lo) else math.randomseed(hi + lo) end
end

local function check_threads(opts)
  local th = package.loaded["lmp.thread"]
  local live = th and th._live_threads and th._live_threads() or 0
  if live > 0 and not opts.allow_threads then
    error(string.format("refusing to fork while %d lmp thread(s) run: a forked "
      .. "child would inherit locks held by threads that do not exist in it "
      .. "(pass allow_threads = true to override)", live), 3)
  end
end

local function become_child(opts, parent)
  for fd in pairs(parent_only) do C.close(fd) end
  parent_only = {}
  children = {}
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
  io.stdout:flush()
  io.stderr:flush()
  for i = #handlers, 1, -1 do
    if handlers[i].prepare then pcall_handler(handlers[i].prepare, "prepare") end
  end
  local parent = {pid = me.pid, name = me.name}
  local pid, pidfd = C.fork()
  if pid == 0 then
    become_child(opts, parent)
    return 0
  end
  for i = 1, #handlers do
    if handlers[i].parent then pcall_handler(handlers[i].parent, "parent") end
  end
  return pid, pidfd
end

function M._exit(code)
  pcall(io.stdout.flush, io.stdout)
  pcall(io.stderr.flush, io.stderr)
  C.exit(code or 0)
end

--- Reaps every child of ours that has ended (no zombies, no join needed).
local function reap_all()
  for pid, p in pairs(children) do
    local done, code = C.poll(pid)
    if done ~= false then
      rawset(p, "_exitcode", code or rawget(p, "_exitcode") or 0)
      children[pid] = nil
    end
  end
end
M._reap_all = reap_all

-- Resolves a target given as "module:function" (spawn-friendly).
local function resolve_target(t)
  if type(t) ~= "string" then return t end
  local mod, fn = t:match("^([%w_%.]+):([%w_]+)$")
  if not mod then error("target '" .. t .. "' is not 'module:function'", 0) end
  return assert(require(mod)[fn], "no function " .. t)
end

local function run_target(target, args, name)
  local ok, err = xpcall(function()
    local f = resolve_target(target)
    return f((table.unpack or unpack)(args, 1, args.n or #args))
  end, function(e)
    if type(e) == "table" then e = tostring(e) end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return 0 end
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
end

function M.Process(o)
  check_opts(o)
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
  }, Process_mt)
end

function Process:_poll()
  local pid = rawget(self, "pid")
  if not pid or rawget(self, "_exitcode") ~= nil then return end
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

local function spawn_process(self)
  local pickle = require "lmp.pickle"
  local pipe = require "lmp.c.pipe"
  local rfd, wfd = pipe.socketpair()
  M._spawn_fds = {}
  local ok, payload = pcall(pickle.dumps, {
    target = self.target, args = self.args, name = self.name,
    daemon = self.daemon, authkey = M._authkey(),
    parent = {pid = me.pid, name = me.name},
    path = M._spawn_path(), cpath = package.cpath,
  }, {name = "process"})
  local fds = M._spawn_fds
  M._spawn_fds = nil
  if not ok then C.close(rfd) C.close(wfd) error(payload, 0) end
  for _, fd in ipairs(self._pass_fds or {}) do fds[#fds + 1] = fd end
  fds[#fds + 1] = rfd
  local boot = string.format("package.path=%q package.cpath=%q "
    .. "require('lmp.process')._spawn_main(%d)", package.path, package.cpath, rfd)
  local pid, pidfd = C.spawn({C.self_exe(), "-e", boot}, fds)
  C.close(rfd)
  local conn = pipe.wrap(wfd)
  local sent, err = pcall(conn.send_frame, conn, 1, payload, 30)
  conn:close()
  if not sent then error(err, 0) end
  return pid, pidfd
end

--- In a spawned child: reads the target from fd and runs it.
function M._spawn_main(fd)
  local pipe = require "lmp.c.pipe"
  require "lmp.pipe"                  -- registers the Connection class
  local conn = pipe.wrap(fd)
  local _, payload = conn:recv_frame(30)
  conn:close()
  local t = require("lmp.pickle").loads(payload)
  package.path, package.cpath = t.path, t.cpath
  me = {name = t.name, pid = C.getpid(), daemon = t.daemon}
  parent_info = t.parent
  authkey = t.authkey
  start_method = "spawn"
  reseed()
  M._exit(run_target(t.target, t.args, t.name))
end

function Process:start()
  if rawget(self, "pid") then error("cannot start a process twice", 2) end
  if rawget(self, "_parent_pid") and self._parent_pid ~= me.pid then
    error("can only start a process object created by the current process", 2)
  end
  reap_all()
  rawset(self, "_parent_pid", me.pid)
  local pid, pidfd
  if self._method == "spawn" then
    pid, pidfd = spawn_process(self)
  else
    pid, pidfd = M._fork{name = self.name, daemon = self.daemon,
                         allow_threads = self._allow_threads}
    if pid == 0 then
      rawset(self, "pid", me.pid)
      M._exit(run_target(self.target, self.args, self.name))
    end
  end
  rawset(self, "pid", pid)
  rawset(self, "sentinel", pidfd)
  children[pid] = self
  return self
end

--- join([timeout]) -> true if the process has ended.
function Process:join(timeout)
  local pid = rawget(self, "pid")
  if not pid then error("cannot join a process that was not started", 2) end
  if pid == me.pid then error("a process cannot join itself", 2) end
  if self._parent_pid ~= me.pid then error("can only join a child process", 2) end
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
  if not rawget(self, "pid") then return false end
  self:_poll()
  return rawget(self, "_exitcode") == nil
end

local function signal(self, sig)
  local pid = rawget(self, "pid")
  if pid and self:is_alive() then C.kill(pid, sig) end
end
function Process:terminate() signal(self, C.SIGTERM) end
function Process:kill() signal(self, C.SIGKILL) end

function Process:close()
  if self:is_alive() then error("cannot close a process while it is running", 2) end
  local fd = rawget(self, "sentinel")
  if fd then C.close(fd) rawset(self, "sentinel", nil) end
end

---------------------------------------------------------------- helpers

function M.current_process()
  return {name = me.name, pid = me.pid, daemon = me.daemon, authkey = M._authkey()}
end

function M.parent_process()
  return parent_info and {name = parent_info.name, pid = parent_info.pid} or nil
end

function M.active_children()
  reap_all()
  local out = {}
  for _, p in pairs(children) do out[#out + 1] = p end
  table.sort(out, function(a, b) return a.pid < b.pid end)
  return out
end

M.cpu_count = C.cpu_count

function M._authkey()
  if not authkey then authkey = C.random_bytes(32) end
  return authkey
end

function M.set_start_method(m)
  if m ~= "fork" and m ~= "spawn" then
    error("bad argument #1 to 'set_start_method' ('fork' or 'spawn' expected)", 2)
  end
  start_method = m
end

function M.get_start_method() return start_method end

--- get_context(method): every constructor bound to that start method.
function M.get_context(method)
  method = method or start_method
  if method ~= "fork" and method ~= "spawn" then
    error("bad argument #1 to 'get_context' ('fork' or 'spawn' expected)", 2)
  end
  local ctx = {start_method = method}
  function ctx.get_start_method() return method end
  function ctx.Process(o)
    local c = {}
    for k, v in pairs(o) do c[k] = v end
    c.context = ctx
    return M.Process(c)
  end
  return setmetatable(ctx, {__index = function(_, name)
    local v = require("lmp")[name]
    if type(v) ~= "function" then return v end
    return function(o, ...)
      if type(o) == "table" and o.context == nil and (name == "Pool" or name == "ThreadPool") then
        local c = {}
        for k, x in pairs(o) do c[k] = x end
        c.context = ctx
        o = c
      elseif o == nil and name == "Pool" then
        o = {context = ctx}
      end
      return v(o, ...)
    end
  end})
end

-- At the end of the main program: stop daemon children, wait for the
-- others (Python's rule), reap everything.
core.atexit(function()
  if me.pid ~= C.getpid() then return end
  reap_all()
  local pipe = require "lmp.c.pipe"
  for _, p in pairs(children) do
    if p.daemon then C.kill(p.pid, C.SIGTERM) end
  end
  for _, p in pairs(children) do
    if p.daemon and not p:join(1) then C.kill(p.pid, C.SIGKILL) p:join(1) end
  end
  for _, p in pairs(children) do
    if not p.daemon then p:join() end
  end
  local _ = pipe
end)

return M
