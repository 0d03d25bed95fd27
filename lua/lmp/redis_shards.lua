--- lmp.redis_shards: the caller's side of a sharded queue (RedisPool with
-- shards = K > 1): results taken shard by shard, and the wait for the
-- next one across the shards (see docs/api/redis.md, "Redis Cluster and
-- shards"). lmp.redis installs these methods on RedisPool.
local core = require "lmp.core"
local R = require "lmp.c.redis"
local RC = require "lmp.redis_cluster"

local unpack = table.unpack or unpack

local X = {}

local M                      -- lmp.redis, set by _add_shard_methods
local P = {}                 -- the methods

-- Delivers a COLLECT reply ({tid, value, ...}); returns the count taken.
function P:_deliver_list(got)
  local n = 0
  for i = 1, #got, 2 do
    if self:_deliver(got[i], got[i + 1]) then n = n + 1 end
  end
  return n
end

-- Takes the results of reattached tasks: task n of a caller is on shard
-- (n - 1) % K (the round robin of _task_cmd); one TAKE per shard.
function P:_take_reattached()
  local nsh, per, order, n = #self.shards, {}, {}, 0
  for tid in pairs(self.reattached) do
    local seq = tonumber(tid:match(":(%d+)$")) or 1
    local sh = self.shards[(seq - 1) % nsh + 1]
    local g = per[sh]
    if not g then g = {keys = {}, tids = {}} per[sh] = g order[#order + 1] = sh end
    g.keys[#g.keys + 1] = sh.k.prefix .. "r:" .. M._caller_of(tid)
    g.tids[#g.tids + 1] = tid
  end
  for _, sh in ipairs(order) do
    local g = per[sh]
    local vals = self.cl:eval("take", g.keys, g.tids)
    for i, tid in ipairs(g.tids) do
      if vals[i] then self:_deliver(tid, vals[i]) n = n + 1 end
    end
  end
  return n
end

-- On a cluster, one BLPOP per shard in flight on its own connection (one
-- command's keys must share a slot), kept across steps; waits up to
-- block for any. Returns the {notify key, task id} pairs popped.
function P:_wait_lanes(block)
  local lanes = self._lanes
  if not lanes then
    local groups = {}
    for i, sh in ipairs(self.shards) do groups[i] = {sh.notify} end
    lanes = RC.lanes({cluster = self.cl, timeout = self.o.timeout,
      connect_timeout = self.o.connect_timeout}, groups)
    self._lanes = lanes
  end
  local bl = string.format("%.3f", block)
  for i, sh in ipairs(self.shards) do
    if lanes:ready(i) then lanes:send(i, "BLPOP", sh.notify, bl) end
  end
  local fds, map, out = {}, {}, {}
  lanes:fds(fds, map)
  if #fds == 0 then core.sleep(math.min(block, 0.02)) return out end   -- all backing off
  R.wait(fds, block)
  for i = 1, #self.shards do
    local r = lanes:recv(i)
    if type(r) == "table" and r[2] then out[#out + 1] = r end
  end
  return out
end

-- _step for K > 1 shards: results are taken shard by shard (COLLECT on
-- each); the wait is one BLPOP over every shard's notify list on one
-- Redis, or one BLPOP per shard on a cluster (_wait_lanes).
function P:_step_shards(timeout)
  local cl, n = self.cl, 0
  local by_notify = self._by_notify
  if not by_notify then
    by_notify = {}
    for _, sh in ipairs(self.shards) do by_notify[sh.notify] = sh end
    self._by_notify = by_notify
  end
  -- A shard is "cold" once a COLLECT found less than a full batch there:
  -- a wait (below) then tells when it has more, so a step does not ask
  -- every shard every time. poll(0) does not wait: it asks them all, and
  -- so does every 8th step (a cold shard is not left behind a hot one).
  local sweep = timeout == 0 or (self._nstep or 0) % 8 == 0
  self._nstep = (self._nstep or 0) + 1
  for _, sh in ipairs(self.shards) do
    if sweep or not sh.cold then
      local got = cl:eval("collect", {sh.notify, sh.results}, {256})
      sh.cold = #got < 512
      n = n + self:_deliver_list(got)
    end
  end
  if n == 0 and next(self.reattached) then
    n = self:_take_reattached()
    if n > 0 then return n end
    if timeout == nil or timeout > 0.05 then timeout = 0.05 end
  end
  if n > 0 or timeout == 0 then return n end
  local block = math.max(math.min(timeout or 1, 1), 0.001)
  local popped = {}
  if cl.cluster then
    popped = self:_wait_lanes(block)
  else
    local args = {"BLPOP"}
    for i, sh in ipairs(self.shards) do args[i + 1] = sh.notify end
    args[#args + 1] = string.format("%.3f", block)
    popped[1] = cl:callt(block + self.o.timeout, unpack(args))
  end
  for _, r in ipairs(popped) do
    local sh = by_notify[r[1]]
    if sh then
      local got = cl:eval("collect", {sh.notify, sh.results}, {256, r[2]})
      sh.cold = #got < 514
      n = n + self:_deliver_list(got)
    end
  end
  return n
end

--- _add_shard_methods(RedisPool, redis): installs the methods above on
-- RedisPool; redis is lmp.redis (for _caller_of).
function X._add_shard_methods(RedisPool, redis)
  M = redis
  for name, f in pairs(P) do RedisPool[name] = f end
end

return X
