--- Spec helpers for Redis Cluster: a cluster of n masters (no replicas)
-- on free local ports in a temporary directory, and slot migration.
-- Every wait is bounded; stop() kills every node and removes the folder.
local H = require "helper"
local RH = require "helpers.redis"
local RC = require "lmp.c.redis"

local CH = {}

-- n ports P (20000-40000) whose cluster bus ports P + 10000 are free too.
local function free_ports(n)
  local p = io.popen(string.format([[python3 -c '
import random, socket
out = []
while len(out) < %d:
    p = random.randint(20000, 40000)
    ss = []
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); ss.append(s)
        if p not in out: out.append(p)
    except OSError:
        pass
    for s in ss: s.close()
print(" ".join(map(str, out)))']], n))
  local s = p:read("*a")
  p:close()
  local ports = {}
  for v in s:gmatch("%d+") do ports[#ports + 1] = tonumber(v) end
  assert(#ports == n, "no free ports: " .. s)
  return ports
end

local Cluster = {}
Cluster.__index = Cluster

--- start(n) -> cluster {nodes = {{port =, url =, pid =, id =}...}, url}:
-- n masters with equal slot ranges (redis-cli --cluster create), state ok
-- on every node.
function CH.start(n)
  n = n or 3
  local self = setmetatable({nodes = {}}, Cluster)
  self.dir = RH.sh("mktemp -d /tmp/lmp-rcluster-spec.XXXXXX"):gsub("%s+$", "")
  local ok, err = pcall(function()
    local addrs = {}
    for i, port in ipairs(free_ports(n)) do
      local node = {port = port, url = "redis://127.0.0.1:" .. port,
        pidfile = string.format("%s/%d.pid", self.dir, port)}
      self.nodes[i] = node
      RH.sh(string.format("redis-server --port %d --bind 127.0.0.1 --cluster-enabled yes"
        .. " --cluster-config-file nodes-%d.conf --cluster-node-timeout 5000 --dir %s"
        .. " --save '' --appendonly no --daemonize yes --pidfile %s --logfile %s/%d.log 2>&1",
        port, port, self.dir, node.pidfile, self.dir, port))
      addrs[i] = "127.0.0.1:" .. port
    end
    for _, node in ipairs(self.nodes) do
      assert(H.wait_until(function()
        return pcall(function() RC.connect(node.url, {timeout = 0.5}):close() end)
      end, 10, 0.02), "redis-server did not start on port " .. node.port)
      node.pid = tonumber(RH.read_file(node.pidfile))
    end
    local out = RH.sh("timeout 30 redis-cli --cluster create " .. table.concat(addrs, " ")
      .. " --cluster-replicas 0 --cluster-yes 2>&1")
    assert(out:find("All 16384 slots covered", 1, true), "cluster create failed: " .. out)
    assert(self:wait_ok(20), "cluster state did not become ok")
    for _, node in ipairs(self.nodes) do node.id = self:call(node, "CLUSTER", "MYID") end
  end)
  if not ok then self:stop() error(err, 0) end
  self.url = self.nodes[1].url
  return self
end

--- call(node, ...) -> one command on one node (a fresh connection).
function Cluster:call(node, ...)
  local c = RC.connect(node.url, {timeout = 5})
  local ok, r = pcall(c.call, c, ...)
  c:close()
  if not ok then error(r, 0) end
  return r
end

--- wait_ok(timeout) -> true once every node says cluster_state:ok and
-- agrees that all 16384 slots are served.
function Cluster:wait_ok(timeout)
  return H.wait_until(function()
    for _, node in ipairs(self.nodes) do
      local ok, info = pcall(self.call, self, node, "CLUSTER", "INFO")
      if not ok or not info:find("cluster_state:ok", 1, true)
          or not info:find("cluster_slots_ok:16384", 1, true) then
        return false
      end
    end
    return true
  end, timeout or 20, 0.05)
end

--- owner(slot) -> the node serving slot (as the first node sees it).
function Cluster:owner(slot)
  for _, r in ipairs(self:call(self.nodes[1], "CLUSTER", "SLOTS")) do
    if slot >= r[1] and slot <= r[2] then
      for _, node in ipairs(self.nodes) do
        if node.port == tonumber(r[3][2]) then return node end
      end
    end
  end
end

--- migrate(slot, to): moves slot and its keys to node `to` (the steps of
-- redis-cli --cluster reshard: IMPORTING, MIGRATING, MIGRATE in batches,
-- SETSLOT NODE on every node). Returns the number of keys moved.
function Cluster:migrate(slot, to)
  local from = self:owner(slot)
  assert(from and from ~= to, "slot " .. slot .. " is already on that node")
  self:call(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.id)
  self:call(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.id)
  local moved = 0
  for _ = 1, 10000 do
    local keys = self:call(from, "CLUSTER", "GETKEYSINSLOT", slot, 100)
    if #keys == 0 then break end
    local cmd = {"MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS"}
    for _, k in ipairs(keys) do cmd[#cmd + 1] = k end
    self:call(from, (table.unpack or unpack)(cmd))
    moved = moved + #keys
  end
  self:call(to, "CLUSTER", "SETSLOT", slot, "NODE", to.id)
  self:call(from, "CLUSTER", "SETSLOT", slot, "NODE", to.id)
  for _, node in ipairs(self.nodes) do
    if node ~= to and node ~= from then self:call(node, "CLUSTER", "SETSLOT", slot, "NODE", to.id) end
  end
  return moved
end

--- stop(): kills every node and removes the folder.
function Cluster:stop()
  for _, node in ipairs(self.nodes) do
    local pid = node.pid or tonumber(RH.read_file(node.pidfile or "") or "")
    if pid then
      RH.sh(string.format("kill -KILL %d 2>/dev/null", pid))
      H.wait_until(function() return not RH.alive(pid) end, 10)
    end
    node.pid = nil
  end
  if self.dir then RH.sh("rm -rf " .. H.shell_quote(self.dir)) end
end

--- worker(cluster_or_url, queue, {concurrency =, args =, script =}) ->
-- {pid, log}: `lmp worker --cluster` on the seed URL.
function CH.worker(url, queue, opts)
  opts = opts or {}
  return RH.worker({url = url}, queue, {concurrency = opts.concurrency,
    script = opts.script, args = "--cluster " .. (opts.args or "")})
end

return CH
