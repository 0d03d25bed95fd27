--- Spec helpers for lmp.RedisPool: a private redis-server on a free port
-- in a temporary directory, and `lmp worker` processes. Every wait is
-- bounded.
local H = require "helper"
local lmp = require "lmp"
local RC = require "lmp.c.redis"

local RH = {}

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end
RH.sh = sh

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
RH.read_file = read_file

local function alive(pid)
  local st = pid and H.proc_state(pid)
  return st ~= nil and st ~= "Z"
end
RH.alive = alive

local Server = {}
Server.__index = Server

function Server:_launch()
  local args = {"redis-server", "--port", self.port, "--bind", "127.0.0.1",
    "--dir", self.dir, "--save", "''", "--daemonize", "yes",
    "--pidfile", self.dir .. "/redis.pid", "--logfile", self.dir .. "/redis.log",
    "--appendonly", self.aof and "yes" or "no", "--appendfsync", "always"}
  if self.password then args[#args + 1] = "--requirepass" args[#args + 1] = self.password end
  os.remove(self.dir .. "/redis.pid")
  sh(table.concat(args, " ") .. " 2>&1")
  local url = self.url
  local ok = H.wait_until(function()
    return pcall(function() RC.connect(url, {timeout = 0.5}):close() end)
  end, 10, 0.02)
  assert(ok, "redis-server did not start: " .. tostring(read_file(self.dir .. "/redis.log")))
  self.pid = tonumber(read_file(self.dir .. "/redis.pid"))
end

--- start{aof = bool, password = s} -> server {port, url, dir, pid}.
function RH.start(opts)
  opts = opts or {}
  local self = setmetatable({port = H.free_port(), aof = opts.aof,
    password = opts.password}, Server)
  self.dir = sh("mktemp -d /tmp/lmp-redis-spec.XXXXXX"):gsub("%s+$", "")
  self.url = string.format("redis://%s127.0.0.1:%d/0",
    self.password and (":" .. self.password .. "@") or "", self.port)
  self:_launch()
  return self
end

--- kill(sig): signals redis-server and waits until it is gone.
function Server:kill(sig)
  if self.pid then
    sh(string.format("kill -%s %d 2>/dev/null", sig or "KILL", self.pid))
    local pid = self.pid
    assert(H.wait_until(function() return not alive(pid) end, 10), "redis-server did not stop")
    self.pid = nil
  end
end

function Server:restart() self:_launch() end

function Server:stop()
  self:kill("KILL")
  sh("rm -rf " .. H.shell_quote(self.dir))
end

--- client() -> lmp.redis client on this server.
function Server:client()
  return require("lmp.redis").client(self.url, {timeout = 5, reconnect_timeout = 10})
end

--- worker(server, queue, {concurrency =, script =, args =}) -> {pid, log}
function RH.worker(server, queue, opts)
  opts = opts or {}
  local log = os.tmpname()
  local cmd = string.format("(exec %s worker --redis %s --queue %s --concurrency %d %s %s >%s 2>&1 </dev/null) & echo $!",
    H.shell_quote(H.lmp_bin), server.url, queue, opts.concurrency or 1,
    opts.args or "", opts.script and H.shell_quote(opts.script) or "", log)
  local pid = tonumber(sh(cmd))
  return {pid = pid, log = log}
end

--- stop_worker(w [, sig]): signals the worker; waits (10 s) for its exit.
function RH.stop_worker(w, sig)
  if alive(w.pid) then
    sh(string.format("kill -%s %d 2>/dev/null", sig or "KILL", w.pid))
    H.wait_until(function() return not alive(w.pid) end, 10)
  end
  local out = read_file(w.log) or ""
  os.remove(w.log)
  return out
end

--- Number of lines of a file (0 if missing).
function RH.count_lines(path)
  local s = read_file(path) or ""
  local n = 0
  for _ in s:gmatch("[^\n]+") do n = n + 1 end
  return n
end

RH.now = lmp.time
return RH
