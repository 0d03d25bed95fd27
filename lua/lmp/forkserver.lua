--- lmp.forkserver: the "forkserver" start method's server and its client.
--
-- Public (see docs/api/process.md): set_forkserver_preload.
--
-- The server is a fresh interpreter (spawned, never forked from the
-- possibly-threaded program) started on the first forkserver Process. It
-- requires the preload modules once, then forks one child per request.
--
-- Channels (all Unix stream sockets, close-on-exec):
--   ctl     program <-> server, one per server. A request is one sendmsg:
--           "fork P1 P2 ...\nM1 M2 ...\n" with fds {theirs, f1, f2, ...}
--           (SCM_RIGHTS): theirs is the child's end of a new per-child
--           socketpair, fK the fds the child gets at the program's numbers
--           PK (pass_fds, Connections among the args), MK the lmp modules
--           the program has loaded: the server requires them before it
--           forks (once: later children find them loaded). EOF on ctl
--           (the program exited, even by SIGKILL) ends the server.
--   child   program (mine) <-> server and child (theirs), one per child.
--           The server writes "pid N\n" with the child's pidfd attached,
--           and "exit CODE\n" once it reaped the child (CODE is -N for
--           signal N), then closes its copy. The program writes the
--           child's frames (identity, work: as spawn sends them) and the
--           child reads them. `mine` is the Process's sentinel:
--           readable once the status is there (or the server is gone).
--
-- Interface used by lmp.process:
--   F._start(frames, fds, mods) -> {pid=, sock=, pidfd=} (pidfd may be nil)
--   F._status(h) -> exit code once known, else nil (never blocks > 1 s)
--   F._pid() -> the server's pid, or nil when none runs for this process
local core = require "lmp.core"
local C = require "lmp.c.proc"
local pipe = require "lmp.c.pipe"
local P = require "lmp.process"

local M = {}

local preload = {}
local server = nil            -- {owner = pid, pid =, ctl = fd} in the program

--- set_forkserver_preload{"module", ...}: modules the server requires once
-- (each forked child starts with them in package.loaded). Takes effect
-- when a server starts (the next one, if one runs already).
function M.set_forkserver_preload(list)
  local ok = type(list) == "table"
  if ok then
    for i = 1, #list do if type(list[i]) ~= "string" then ok = false end end
  end
  if not ok then
    error("bad argument #1 to 'set_forkserver_preload' (a list of module names expected)", 2)
  end
  preload = {}
  for i = 1, #list do preload[i] = list[i] end
end

---------------------------------------------------------------- program side

local function drop_server()
  if server and server.owner == C.getpid() then
    P._parent_only(server.ctl, false)
    C.close(server.ctl)
  end
  server = nil
end

-- A server of this process, still running (it is our spawn child).
local function server_alive()
  if not server then return false end
  if server.owner ~= C.getpid() then server = nil return false end   -- forked
  if C.poll(server.pid) == false then return true end
  drop_server()
  return false
end

-- Reaps a server we killed (bounded: it is SIGKILLed).
local function reap_server(pid)
  local deadline = core.time() + 2
  while C.poll(pid) == false and core.time() < deadline do core.sleep(0.001) end
end

local function start_server()
  local a, b = pipe.socketpair()
  local mods = {}
  for i, m in ipairs(preload) do mods[i] = string.format("%q", m) end
  local boot = string.format("package.path=%q package.cpath=%q "
    .. "require('lmp.forkserver')._server_main(%d,{%s})", P._spawn_path(),
    package.cpath, b, table.concat(mods, ","))
  local ok, pid, pidfd = pcall(C.spawn, {P._executable(), "-e", boot}, {b})
  C.close(b)
  if not ok then C.close(a) error(pid, 0) end
  if pidfd then C.close(pidfd) end       -- C.poll(pid) tells if it runs
  local okr, msg = pcall(C.recv_fds, a, 30)
  if not okr or not tostring(msg):match("^ready\n") then
    C.kill(pid, C.SIGKILL)
    reap_server(pid)
    C.close(a)
    error(core.error("os", "the forkserver did not start: " .. (okr and
      "it exited (see its stderr)" or tostring(msg))), 0)
  end
  P._parent_only(a)                      -- fork children close it
  server = {owner = C.getpid(), pid = pid, ctl = a}
end

-- One request: the per-child socket and what the server answered.
local function request(fds, mods)
  local mine, theirs = pipe.socketpair()
  local nums = {}
  for i, fd in ipairs(fds) do nums[i] = tostring(fd) end
  local all = {theirs}
  for _, fd in ipairs(fds) do all[#all + 1] = fd end
  local ok, err = pcall(C.send_fds, server.ctl, "fork " .. table.concat(nums, " ")
    .. "\n" .. table.concat(mods, " ") .. "\n", all, 10)
  C.close(theirs)
  local data, got
  if ok then ok, data, got = pcall(C.recv_fds, mine, 30) end
  if not ok or data == "" then
    C.close(mine)
    return nil, ok and "the forkserver closed the request" or tostring(err)
  end
  local pid = tonumber(data:match("^pid (%d+)\n"))
  if not pid then
    for _, fd in ipairs(got) do C.close(fd) end
    C.close(mine)
    error(core.error("os", "forkserver: " .. (data:match("^error (.*)\n") or data)), 0)
  end
  return {pid = pid, sock = mine, pidfd = got[1], buf = data:match("^pid %d+\n(.*)$")}
end

-- Asks the server for a child; a server that died since the last start
-- is replaced once (a second failure raises).
local function fork_child(fds, mods)
  for attempt = 1, 2 do
    if not server_alive() then start_server() end
    local h, why = request(fds, mods)
    if h then return h end
    local pid = server.pid            -- the server is broken: replace it
    drop_server()
    C.kill(pid, C.SIGKILL)
    reap_server(pid)
    if attempt == 2 then
      error(core.error("broken", "forkserver: " .. why), 0)
    end
  end
end

--- _start(frames, fds, mods): a child of the server that reads the frames
-- (its identity, its work) and runs them; fds reach it at the same
-- numbers; the modules named in mods are loaded in it first.
function M._start(frames, fds, mods)
  local h = fork_child(fds, mods)
  local conn = pipe.wrap(h.sock)
  local ok, err = pcall(function()
    for _, f in ipairs(frames) do conn:send_frame(1, f, 30) end
  end)
  conn:detach()                       -- h.sock stays open: the sentinel
  if not ok then
    C.signal(h.pidfd, h.pid, C.SIGKILL)
    C.close(h.sock)
    if h.pidfd then C.close(h.pidfd) end
    error(err, 0)
  end
  return h
end

--- _status(h) -> exit code once the server reported it, else nil. A server
-- gone without a word (killed) took the child with it (PR_SET_PDEATHSIG):
-- -9, once the child's pidfd says it ended (1 s at most).
function M._status(h)
  if h.code ~= nil then return h.code end
  if #pipe.poll_fds({h.sock}, 0) == 0 then return nil end
  local ok, data = pcall(C.recv_fds, h.sock, 0)
  if not ok then return nil end
  if data == "" then
    if h.pidfd then pipe.poll_fds({h.pidfd}, 1) end
    h.code = -C.SIGKILL
    return h.code
  end
  h.buf = (h.buf or "") .. data
  local code = h.buf:match("exit (%-?%d+)\n")
  if code then h.code = tonumber(code) end
  return h.code
end

function M._pid()
  return server_alive() and server.pid or nil
end

---------------------------------------------------------------- server side

local kids = {}               -- in the server: pid -> {sock =, pidfd =}

local function report(pid, code)
  local k = kids[pid]
  kids[pid] = nil
  pcall(C.send_fds, k.sock, "exit " .. code .. "\n", nil, 5)
  C.close(k.sock)
  if k.pidfd then C.close(k.pidfd) end
end

local function reap()
  for pid in pairs(kids) do
    local done, code = C.poll(pid)
    if done ~= false then report(pid, done and code or -C.SIGKILL) end
  end
end

-- In the forked child: nothing of the server's stays open, the passed
-- fds move to the program's numbers, then the spawn-like boot runs.
local function become_child(ctl, nums, fds, mods)
  C.close(ctl)
  for _, k in pairs(kids) do
    C.close(k.sock)
    if k.pidfd then C.close(k.pidfd) end
  end
  kids = {}
  local top = 3
  for _, n in ipairs(nums) do if n >= top then top = n + 1 end end
  for i, fd in ipairs(fds) do fds[i] = C.move_fd(fd, top) end
  for i = 2, #fds do
    C.dup2(fds[i], nums[i - 1])
    C.close(fds[i])
  end
  P._forkserver_main(fds[1], mods)    -- never returns
end

local function serve_request(ctl, data, fds)
  local nums, mods = {}, {}
  local fdlist, modlist = data:match("^fork([%d ]*)\n([^\n]*)\n$")
  for n in (fdlist or ""):gmatch("%d+") do nums[#nums + 1] = tonumber(n) end
  if not fdlist or #fds ~= #nums + 1 then
    for _, fd in ipairs(fds) do C.close(fd) end
    return
  end
  for m in modlist:gmatch("[%w_%.]+") do
    mods[#mods + 1] = m
    if not package.loaded[m] then pcall(require, m) end
  end
  local ok, pid, pidfd = pcall(P._fork, {reap = false, pidfd = true})
  if ok and pid == 0 then become_child(ctl, nums, fds, mods) end
  for i = 2, #fds do C.close(fds[i]) end
  local msg = ok and ("pid " .. pid .. "\n") or ("error " .. tostring(pid):gsub("\n", " ") .. "\n")
  pcall(C.send_fds, fds[1], msg, pidfd and {pidfd} or nil, 5)
  if ok then kids[pid] = {sock = fds[1], pidfd = pidfd}
  else C.close(fds[1]) end
end

-- One wait of the server: ctl's requests, children's ends. false: stop
-- (the program ended, or a signal such as SIGTERM interrupted the wait).
local function serve_once(ctl)
  local watch, poll_every = {ctl}, nil
  for _, k in pairs(kids) do
    if k.pidfd then watch[#watch + 1] = k.pidfd else poll_every = 0.05 end
  end
  local ok, ready = pcall(pipe.poll_fds, watch, poll_every)
  if not ok then return false end
  reap()
  if ready[1] ~= ctl then return true end
  local okr, data, fds = pcall(C.recv_fds, ctl, 0)
  if not okr then return core.is_error(data, "timeout") end
  if data == "" then return false end           -- the program ended
  serve_request(ctl, data, fds)
  return true
end

--- In the server (spawned by start_server): preload, then serve until the
-- program's end of ctl closes. Never returns.
function M._server_main(ctl, mods)
  -- A Ctrl-C meant for the program's process group: the server ignores it
  -- as Python's does (its children get the default action back at fork).
  C.ignore_signal(C.SIGINT)
  for _, m in ipairs(mods or {}) do
    local ok, err = pcall(require, m)
    if not ok then
      io.stderr:write("lmp: forkserver preload of '", m, "' failed: ", tostring(err), "\n")
    end
  end
  local ok = pcall(C.send_fds, ctl, "ready\n", nil, 10)
  while ok do
    local okl, more = pcall(serve_once, ctl)
    ok = okl and more
  end
  P._exit(0)
end

return M
