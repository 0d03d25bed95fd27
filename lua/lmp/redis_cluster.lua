--- lmp.redis_cluster: Redis Cluster routing and sharded queues for
-- lmp.redis (RedisPool) and lmp.redis_worker (`lmp worker`).
--
--   C.slot(key)               the cluster slot of key (lmp.c.redis_cluster)
--   C.shard_tag(q, i, K)      the hash tag of shard i (0-based) of K
--   C.client(url, opts)       a cluster client: the calls of lmp.redis's
--                             Client (call, callt, pipeline, eval, close),
--                             each sent to the node owning its key's slot
--   C.lanes(opts, groups)     blocking reads (XREADGROUP, BLPOP) in flight
--                             on several connections at once
--
-- The client reads the slot map with CLUSTER SLOTS from the seed node (or
-- any node it knows), follows MOVED (and reads the map again) and ASK
-- (ASKING first, on the target's connection), waits out TRYAGAIN and
-- CLUSTERDOWN, and after a connection failure reads the map from any node
-- it knows and retries, with backoff, until reconnect_timeout has passed.
-- See docs/api/redis.md, "Redis Cluster and shards".
local core = require "lmp.core"
local R = require "lmp.c.redis"
local CS = require "lmp.c.redis_cluster"

local C = {}
local unpack = table.unpack or unpack
local SLOTS = CS.SLOTS

C.slot = CS.slot
C.MAX_SHARDS = 256

--- shard_tag(queue, i, K) -> the hash tag of shard i (0..K-1) of a queue
-- of K shards: K = 1 gives the queue name itself (the keys of an unsharded
-- queue); otherwise "queue:i" or, when that slot is not in the i-th of K
-- equal slot ranges, the first "queue:i.n" (n = 1, 2, ...) that is. On a
-- cluster whose masters hold equal ranges (what `redis-cli --cluster
-- create` makes), K shards over K masters land one per master.
function C.shard_tag(queue, i, k)
  if k == 1 then return queue end
  local base = queue .. ":" .. i
  local lo, hi = math.floor(i * SLOTS / k), math.floor((i + 1) * SLOTS / k)
  local tag = base
  for n = 1, 100000 do
    local s = CS.slot(tag)
    if s >= lo and s < hi then return tag end
    tag = base .. "." .. n
  end
  return base
end

local function retryable(e)
  return core.is_error(e, "broken") or core.is_error(e, "os")
      or core.is_error(e, "timeout")
end
C._retryable = retryable

-- "MOVED 3999 127.0.0.1:6381" -> "MOVED", 3999, "127.0.0.1:6381"; nil if
-- e is not a redirection. "TRYAGAIN" and "CLUSTERDOWN" (and a script's
-- call refused during a migration) give "WAIT".
local function redirect_of(e)
  if not core.is_error(e, "remote") then return nil end
  local t = tostring(e.redis)
  local kind, slot, to = t:match("^(%u+) (%d+) (%S+)")
  if kind == "MOVED" or kind == "ASK" then return kind, tonumber(slot), to end
  if t:match("^TRYAGAIN") or t:match("^CLUSTERDOWN")
      or t:find("non local key", 1, true) then
    return "WAIT"
  end
  return nil
end
C._redirect_of = redirect_of

-- The key a command acts on (its slot routes it): a[i] is the command's
-- name. nil: any node will do.
local function key_of(a, i)
  local c = tostring(a[i]):upper()
  if c == "XGROUP" or c == "XINFO" then return a[i + 2] end
  if c == "XREADGROUP" or c == "XREAD" then
    for j = i + 1, #a do
      if tostring(a[j]):upper() == "STREAMS" then return a[j + 1] end
    end
    return nil
  end
  if c == "EVALSHA" or c == "EVAL" then
    return (tonumber(a[i + 2]) or 0) > 0 and a[i + 3] or nil
  end
  if c == "SCRIPT" or c == "PING" or c == "CLUSTER" or c == "INFO"
      or c == "TIME" or c == "ASKING" then
    return nil
  end
  return a[i + 1]
end
C._key_of = key_of

-- "host:port" of a CLUSTER SLOTS node entry; an empty ip is the seed's.
local function addr_of(node, seed_host)
  local ip = node[1]
  if type(ip) ~= "string" or ip == "" or ip == "?" then ip = seed_host end
  return (ip:find(":", 1, true) and "[" .. ip .. "]" or ip) .. ":" .. tostring(node[2])
end

---------------------------------------------------------------- client

local Cluster = {}
Cluster.__index = Cluster

--- client(url, opts) -> a cluster client. url (redis://[user:pw@]host:port)
-- names a seed node; opts: timeout, connect_timeout, reconnect_timeout (and
-- whatever else lmp.c.redis's connect takes, passed on to every node).
-- Reads the slot map at once (nothing retries at start).
function C.client(url, opts)
  opts = opts or {}
  local u = R.parse_url(url)
  if u.path and u.path ~= "" then error("bad argument #1 to 'RedisPool' (cluster needs a redis:// URL, not a Unix socket)", 3) end
  if (u.db or 0) ~= 0 then error("bad argument #1 to 'RedisPool' (Redis Cluster has only db 0)", 3) end
  local scheme, rest = url:match("^(%a+)://(.*)$")
  local self = setmetatable({
    url = url, cluster = true, shas = {}, nodes = {}, slots = {},
    scheme = scheme, userinfo = rest:match("^([^/@]*@)") or "",
    seed_host = u.host, seed = addr_of({u.host, u.port}, u.host),
    copts = {}, reconnect_timeout = opts.reconnect_timeout or 30,
  }, Cluster)
  for k, v in pairs(opts) do self.copts[k] = v end
  self.copts.timeout = opts.timeout or 5
  self.copts.connect_timeout = opts.connect_timeout or self.copts.timeout
  self.known = {self.seed}
  self.conn = self:_conn(self.seed)
  self:refresh(true)
  return self
end

--- node_url(addr) -> the seed URL with its host:port replaced by addr.
function Cluster:node_url(addr)
  return self.scheme .. "://" .. self.userinfo .. addr
end

function Cluster:_conn(addr)
  local c = self.nodes[addr]
  if c then return c end
  c = R.connect(self:node_url(addr), self.copts)
  self.nodes[addr] = c
  return c
end

function Cluster:_drop(addr)
  local c = self.nodes[addr]
  self.nodes[addr] = nil
  if c then pcall(c.close, c) end
  if self.conn == c then self.conn = nil end
end

-- Reads CLUSTER SLOTS from the first node that answers (the seed, then
-- every node seen). strict: raise what the seed said (at start).
function Cluster:refresh(strict)
  local last
  for _, addr in ipairs(self.known) do
    local ok, r = pcall(function() return self:_conn(addr):call("CLUSTER", "SLOTS") end)
    if ok then return self:_set_map(r) end
    if strict then
      if core.is_error(r, "remote") then
        error(core.error("remote", string.format("%s is not a Redis Cluster node (cluster = true): %s",
          addr, tostring(r.redis)), {redis = r.redis}), 0)
      end
      error(r, 0)
    end
    if retryable(r) then self:_drop(addr) end
    last = r
  end
  error(last or core.error("broken", "no Redis Cluster node is reachable"), 0)
end

function Cluster:_set_map(r)
  local slots, seen, known = {}, {}, {self.seed}
  local masters = {}
  for _, range in ipairs(r) do
    local addr = addr_of(range[3], self.seed_host)
    for s = tonumber(range[1]), tonumber(range[2]) do slots[s] = addr end
    if not seen[addr] then
      seen[addr] = true
      masters[#masters + 1] = addr
      if addr ~= self.seed then known[#known + 1] = addr end
    end
  end
  for _, addr in ipairs(self.known) do   -- keep old nodes to ask next time
    if not seen[addr] and addr ~= self.seed then known[#known + 1] = addr seen[addr] = true end
  end
  self.slots, self.known, self.masters = slots, known, masters
  self.refreshes = (self.refreshes or 0) + 1
end

--- addr(key) -> "host:port" of the node owning key's slot.
function Cluster:addr(key)
  if key == nil then return self.masters and self.masters[1] or self.seed end
  return self.slots[CS.slot(key)] or self.seed
end

-- Runs f(conn, ...) on the node owning key, following redirections and
-- retrying connection failures until reconnect_timeout has passed.
function Cluster:_exec(key, f, ...)
  local deadline, asking, pause = nil, nil, 0.01
  while true do
    local addr = asking or self:addr(key)
    local ok, r = pcall(self._conn, self, addr)
    if ok then
      local conn = r
      if asking then ok, r = pcall(conn.call, conn, "ASKING") end
      if ok then ok, r = pcall(f, conn, ...) end
    end
    if ok then
      if self.failed then
        self.failed = nil
        self.reconnects = (self.reconnects or 0) + 1
        if self.on_reconnect then self.on_reconnect(self) end
      end
      return r
    end
    local kind, slot, to = redirect_of(r)
    asking = nil
    if not kind and not retryable(r) then error(r, 0) end
    deadline = deadline or core.time() + self.reconnect_timeout
    if core.time() >= math.min(deadline, self.stop_at or deadline) then error(r, 0) end
    if kind == "MOVED" then
      self.slots[slot] = to
      pcall(self.refresh, self)
      self.slots[slot] = self.slots[slot] or to
    elseif kind == "ASK" then
      asking = to
    else
      if kind ~= "WAIT" then       -- the node went away: ask the others
        if not self.failed and self.on_reconnect_start then self.on_reconnect_start(r) end
        self.failed = true
        self:_drop(addr)
        pcall(self.refresh, self)
      end
      core.sleep(pause * (0.5 + math.random()))
      pause = math.min(pause * 2, kind == "WAIT" and 0.2 or 1)
    end
  end
end

local function do_call(conn, ...) return conn:call(...) end
local function do_callt(conn, t, ...) return conn:callt(t, ...) end
local function do_cmd(conn, cmd) return conn:call(unpack(cmd)) end

function Cluster:call(...) return self:_exec(key_of({...}, 1), do_call, ...) end
function Cluster:callt(t, ...) return self:_exec(key_of({...}, 1), do_callt, t, ...) end

--- pipeline(cmds) -> replies: commands grouped per node, one pipeline
-- each; a command redirected (or whose node failed) is sent again alone.
function Cluster:pipeline(cmds)
  local groups, order, out = {}, {}, {}
  for i, cmd in ipairs(cmds) do
    local addr = self:addr(key_of(cmd, 1))
    local g = groups[addr]
    if not g then g = {idx = {}, cmds = {}} groups[addr] = g order[#order + 1] = addr end
    g.idx[#g.idx + 1], g.cmds[#g.cmds + 1] = i, cmd
  end
  for _, addr in ipairs(order) do
    local g = groups[addr]
    local ok, r = pcall(function() return self:_conn(addr):pipeline(g.cmds) end)
    if not ok and not retryable(r) then error(r, 0) end
    for j, i in ipairs(g.idx) do
      local v = ok and r[j]
      if not ok or redirect_of(v) then
        local okc, rc = pcall(self._exec, self, key_of(cmds[i], 1), do_cmd, cmds[i])
        v = rc
        if not okc and not core.is_error(rc, "remote") then error(rc, 0) end
      end
      out[i] = v
    end
  end
  return out
end

-- EVALSHA by the sha cached in self.shas, loading the script again after
-- NOSCRIPT (lmp.redis's; a script's sha is the same on every node).
local function do_eval(conn, self, name, nkeys, args)
  return require("lmp.redis")._do_eval(conn, self, name, nkeys, args)
end

--- eval(name, keys, args) runs script S[name] on the node owning keys[1]
-- (every key of a script shares one hash tag).
function Cluster:eval(name, keys, args)
  local all, n = {}, 0
  for i = 1, #keys do n = n + 1 all[n] = keys[i] end
  for i = 1, #args do n = n + 1 all[n] = args[i] end
  all.n = n
  return self:_exec(keys[1], do_eval, self, name, #keys, all)
end

function Cluster:close()
  for addr in pairs(self.nodes) do self:_drop(addr) end
end

---------------------------------------------------------------- lanes

--- read_groups(shards, cluster) -> the key lists of a worker's read
-- lanes: on one Redis, one lane reading every shard's stream (one
-- XREADGROUP); on a cluster, one lane per shard (the keys of one command
-- must share a slot).
function C.read_groups(shards, cluster)
  local groups = {}
  if not cluster then
    groups[1] = {}
    for i, sh in ipairs(shards) do groups[1][i] = sh.k.tasks end
  else
    for i, sh in ipairs(shards) do groups[i] = {sh.k.tasks} end
  end
  return groups
end

-- Blocking reads in flight on several connections at once: lane i holds
-- the keys of groups[i] (on a cluster, keys of one slot), its own
-- connection, and at most one command sent and not yet answered.
local Lanes = {}
Lanes.__index = Lanes

--- lanes({url =, cluster = client or nil, conn = {connect options},
-- timeout =, connect_timeout =}, groups) -> lanes. groups: a list of key
-- lists, one per lane. On one Redis (no cluster) every lane connects to
-- url with opts.conn's options; on a cluster, to the node owning its
-- first key, with the cluster client's.
function C.lanes(opts, groups)
  local self = setmetatable({url = opts.url, cl = opts.cluster, list = {}, copts = {}}, Lanes)
  for k, v in pairs(opts.cluster and opts.cluster.copts or opts.conn or {}) do self.copts[k] = v end
  self.copts.timeout = opts.timeout or self.copts.timeout or 5
  self.copts.connect_timeout = opts.connect_timeout or 1
  for i, g in ipairs(groups) do self.list[i] = {keys = g, busy = false, retry_at = 0, pause = 0.05} end
  return self
end

function Lanes:_fail(lane, e, why)
  if lane.conn then pcall(lane.conn.close, lane.conn) end
  lane.conn, lane.busy = nil, false
  lane.retry_at = core.time() + lane.pause * (0.5 + math.random())
  lane.pause = math.min(lane.pause * 2, 1)
  if self.cl and why ~= "wait" then pcall(self.cl.refresh, self.cl) end
  if self.on_error then self.on_error(lane, e) end
end

--- ready(i) -> true if lane i may send now (nothing in flight, not
-- backing off after a failure).
function Lanes:ready(i)
  local lane = self.list[i]
  return not lane.busy and core.time() >= lane.retry_at
end

--- next_retry() -> the earliest time a lane with nothing in flight may
-- send again (math.huge if none waits).
function Lanes:next_retry()
  local t = math.huge
  for _, lane in ipairs(self.list) do
    if not lane.busy and lane.retry_at < t then t = lane.retry_at end
  end
  return t
end

--- send(i, cmd, ...) sends a command on lane i (connecting first).
-- Returns true, or false after a failure (the lane backs off).
-- Raises only "interrupted" and "auth".
function Lanes:send(i, ...)
  local lane = self.list[i]
  local ok, e = pcall(function(...)
    if not lane.conn then
      local url = self.url
      if self.cl then
        lane.addr = lane.ask or self.cl:addr(lane.keys[1])
        url = self.cl:node_url(lane.addr)
      end
      lane.conn = R.connect(url, self.copts)
    end
    if lane.ask then
      lane.conn:call("ASKING")
      lane.ask = nil
    end
    lane.conn:send(...)
  end, ...)
  if ok then lane.busy = true return true end
  if core.is_error(e, "interrupted") or core.is_error(e, "auth") then error(e, 0) end
  self:_fail(lane, e)
  return false
end

--- fds(out, map) appends the fds of the lanes waiting for a reply to out,
-- and their lane numbers to map (same positions).
function Lanes:fds(out, map)
  for i, lane in ipairs(self.list) do
    if lane.busy then
      out[#out + 1] = lane.conn:fileno()
      map[#out] = i
    end
  end
end

--- busy() -> true if a reply is owed on any lane.
function Lanes:busy()
  for _, lane in ipairs(self.list) do if lane.busy then return true end end
  return false
end

--- recv(i) -> the reply of lane i if it has arrived (nil otherwise, or
-- after a failure or a redirection: the lane sends again later).
function Lanes:recv(i)
  local lane = self.list[i]
  if not lane.busy then return nil end
  local ok, got, reply = pcall(lane.conn.recv, lane.conn, 0)
  if not ok then
    if core.is_error(got, "interrupted") then error(got, 0) end
    self:_fail(lane, got)
    return nil
  end
  if not got then return nil end
  lane.busy = false
  local kind, _, to = redirect_of(reply)
  if kind == "ASK" then
    -- the key is moving: the next read goes to the target, after ASKING
    self:_fail(lane, reply, "wait")
    lane.ask, lane.retry_at = to, 0
    return nil
  elseif kind then
    self:_fail(lane, reply, kind == "WAIT" and "wait" or nil)
    return nil
  elseif core.is_error(reply) then
    lane.retry_at = core.time() + 0.05  -- e.g. NOGROUP: on_error mends it
    if self.on_error then self.on_error(lane, reply) end
    return nil
  end
  lane.pause = 0.05
  return reply
end

function Lanes:close()
  for _, lane in ipairs(self.list) do
    if lane.conn then pcall(lane.conn.close, lane.conn) end
    lane.conn, lane.busy = nil, false
  end
end

return C
