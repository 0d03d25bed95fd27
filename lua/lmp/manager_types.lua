--- lmp.manager_types: the objects a manager serves (dict, list, Queue,
-- JoinableQueue, Value, Lock, RLock, Semaphore, Event, Namespace).
--
-- They live in the manager's server process, which serves every client
-- from one loop, so no method may block: a call that would wait (get on
-- an empty queue, acquire of a held lock) returns WAIT and a timeout, and
-- the server parks it and calls it again after each call that changed the
-- object, or once more with ctx.expired set when its timeout has passed
-- (then it must answer: false, or the "empty"/"full"/"timeout" error).
--
-- Methods take (self, ctx, ...): ctx.cid names the calling connection
-- (locks are owned by connections; a connection that goes away releases
-- what it held: ctx.holds records it), ctx.expired is set on the last try.
-- These objects can also be returned by a BaseManager's registered
-- functions (`local q = require("lmp.manager_types").Queue()`), which is
-- how a master serves a task queue to workers on other machines.
local core = require "lmp.core"

local T = {}
local WAIT = setmetatable({}, {__tostring = function() return "WAIT" end})
T.WAIT = WAIT

local function fail(kind, fmt, ...)
  error(core.error(kind, string.format(fmt, ...)), 0)
end

local function class(typeid, proxy)
  local c = {__served = typeid, __proxy = proxy}
  c.__index = c
  c.__tostring = function(self)
    return string.format("lmp.manager_types.%s (%s)", typeid, tostring(self._id or "local"))
  end
  return c
end

local function check_key(k)
  if k == nil or k ~= k then fail("value", "a dict key cannot be nil or NaN") end
  return k
end

-- Timeouts as lmp's own objects take them: nil waits for ever, 0 or
-- false tries once, a number waits that many seconds.
local function timeout_of(t)
  if t == nil then return nil end
  if t == false then return 0 end
  if type(t) ~= "number" or t < 0 or t ~= t then
    error("timeout must be a number >= 0, false or nil", 0)
  end
  return t
end

-- acquire([timeout]) | acquire(false) | acquire(true [, timeout])
local function acquire_timeout(a, b)
  if a == true then return timeout_of(b) end
  return timeout_of(a)
end

---------------------------------------------------------------- dict
local Dict = class("dict")
function T.dict(init)
  local t = {}
  if init ~= nil then
    if type(init) ~= "table" then error("dict(init): table expected", 0) end
    for k, v in pairs(init) do t[k] = v end
  end
  return setmetatable({t = t, n = 0}, Dict)
end
function Dict:get(_, k, default)
  local v = self.t[check_key(k)]
  if v == nil then return default end
  return v
end
function Dict:set(_, k, v) self.t[check_key(k)] = v end
function Dict:has(_, k) return self.t[check_key(k)] ~= nil end
function Dict:pop(_, k, default)
  local v = self.t[check_key(k)]
  self.t[k] = nil
  if v == nil then return default end
  return v
end
function Dict:setdefault(_, k, default)
  local v = self.t[check_key(k)]
  if v == nil then self.t[k] = default v = default end
  return v
end
function Dict:delete(_, k) self.t[check_key(k)] = nil end
function Dict:keys()
  local r = {}
  for k in pairs(self.t) do r[#r + 1] = k end
  return r
end
function Dict:values()
  local r = {}
  for _, v in pairs(self.t) do r[#r + 1] = v end
  return r
end
function Dict:items()
  local r = {}
  for k, v in pairs(self.t) do r[#r + 1] = {k, v} end
  return r
end
function Dict:update(_, t)
  if type(t) ~= "table" then error("update: table expected", 0) end
  for k, v in pairs(t) do self.t[k] = v end
end
function Dict:len()
  local n = 0
  for _ in pairs(self.t) do n = n + 1 end
  return n
end
function Dict:clear() self.t = {} end
function Dict:copy()
  local r = {}
  for k, v in pairs(self.t) do r[k] = v end
  return r
end

---------------------------------------------------------------- list
-- 1-based like Lua; negative indexes count from the end (-1 is the last).
local List = class("list")
function T.list(init)
  local a, n = {}, 0
  if init ~= nil then
    if type(init) ~= "table" then error("list(init): table expected", 0) end
    n = #init
    for i = 1, n do a[i] = init[i] end
  end
  return setmetatable({a = a, n = n}, List)
end
local function index(self, i, extra)
  if type(i) ~= "number" or i ~= math.floor(i) then error("list index must be an integer", 0) end
  if i < 0 then i = self.n + 1 + i end
  if i < 1 or i > self.n + (extra or 0) then
    fail("index", "list index %d out of range (length %d)", i, self.n)
  end
  return i
end
function List:get(_, i) return self.a[index(self, i)] end
function List:set(_, i, v) self.a[index(self, i)] = v end
function List:append(_, v) self.n = self.n + 1 self.a[self.n] = v end
function List:extend(_, t)
  if type(t) ~= "table" then error("extend: table expected", 0) end
  for i = 1, #t do self.n = self.n + 1 self.a[self.n] = t[i] end
end
function List:insert(_, i, v)
  i = index(self, i, 1)
  for j = self.n, i, -1 do self.a[j + 1] = self.a[j] end
  self.a[i] = v
  self.n = self.n + 1
end
function List:pop(_, i)
  if self.n == 0 then fail("index", "pop from an empty list") end
  i = i == nil and self.n or index(self, i)
  local v = self.a[i]
  for j = i, self.n - 1 do self.a[j] = self.a[j + 1] end
  self.a[self.n] = nil
  self.n = self.n - 1
  return v
end
function List:index(_, v)
  for i = 1, self.n do if self.a[i] == v then return i end end
  return nil
end
function List:remove(_, v)
  local i = self:index(nil, v)
  if not i then fail("value", "list:remove(x): x not in list") end
  self:pop(nil, i)
end
function List:len() return self.n end
function List:clear() self.a, self.n = {}, 0 end
function List:copy()
  local r = {}
  for i = 1, self.n do r[i] = self.a[i] end
  return r
end

---------------------------------------------------------------- queues
local Queue = class("Queue")
local function new_queue(cls, maxsize)
  if maxsize ~= nil and type(maxsize) ~= "number" then error("maxsize must be a number", 0) end
  return setmetatable({items = {}, first = 1, last = 0, max = maxsize or 0,
                       unfinished = 0}, cls)
end
function T.Queue(maxsize) return new_queue(Queue, maxsize) end
function Queue:qsize() return self.last - self.first + 1 end
function Queue:empty() return self.last < self.first end
function Queue:full() return self.max > 0 and self:qsize() >= self.max end
function Queue:maxsize() return self.max end
function Queue:put(ctx, v, timeout)
  timeout = timeout_of(timeout)
  if self:full() then
    if timeout == 0 or ctx.expired then fail("full", "queue is full") end
    return WAIT, timeout
  end
  self.last = self.last + 1
  self.items[self.last] = v
  self.unfinished = self.unfinished + 1
end
function Queue:get(ctx, timeout)
  timeout = timeout_of(timeout)
  if self:empty() then
    if timeout == 0 or ctx.expired then fail("empty", "queue is empty") end
    return WAIT, timeout
  end
  local v = self.items[self.first]
  self.items[self.first] = nil
  self.first = self.first + 1
  return v
end
function Queue:put_nowait(ctx, v) return self:put(ctx, v, 0) end
function Queue:get_nowait(ctx) return self:get(ctx, 0) end

local JoinableQueue = class("JoinableQueue")
for k, f in pairs(Queue) do
  if type(f) == "function" and k:sub(1, 2) ~= "__" then JoinableQueue[k] = f end
end
function T.JoinableQueue(maxsize) return new_queue(JoinableQueue, maxsize) end
function JoinableQueue:task_done()
  if self.unfinished <= 0 then error("task_done() called too many times", 0) end
  self.unfinished = self.unfinished - 1
end
function JoinableQueue:join(ctx, timeout)
  timeout = timeout_of(timeout)
  if self.unfinished == 0 then return true end
  if timeout == 0 or ctx.expired then fail("timeout", "join timed out") end
  return WAIT, timeout
end

---------------------------------------------------------------- Value
-- Value(typecode, v) as Python's manager takes it, or Value(v).
local Value = class("Value", "value")
function T.Value(...)
  if select("#", ...) >= 2 then
    local typecode, v = ...
    return setmetatable({typecode = typecode, v = v}, Value)
  end
  return setmetatable({v = (...)}, Value)
end
function Value:get() return self.v end
function Value:set(_, v) self.v = v end
-- add(n) -> the new value: an atomic increment (one call, no lock needed).
function Value:add(_, n)
  if type(self.v) ~= "number" then fail("value", "Value:add on a non-number") end
  self.v = self.v + (n or 1)
  return self.v
end

---------------------------------------------------------------- locks
local Lock = class("Lock")
function T.Lock() return setmetatable({owner = nil}, Lock) end
function Lock:acquire(ctx, a, b)
  local timeout = acquire_timeout(a, b)
  if self.owner == nil then
    self.owner = ctx.cid
    ctx.holds[self] = true
    return true
  end
  if timeout == 0 or ctx.expired then return false end
  return WAIT, timeout
end
-- Any connection may release a Lock (as threading.Lock); RLock is owned.
function Lock:release(ctx)
  if self.owner == nil then fail("value", "release of an unlocked lock") end
  if ctx.holds_of(self.owner) then ctx.holds_of(self.owner)[self] = nil end
  self.owner = nil
end
function Lock:locked() return self.owner ~= nil end
function Lock:_drop(cid) if self.owner == cid then self.owner = nil end end

local RLock = class("RLock")
function T.RLock() return setmetatable({owner = nil, count = 0}, RLock) end
function RLock:acquire(ctx, a, b)
  local timeout = acquire_timeout(a, b)
  if self.owner == nil or self.owner == ctx.cid then
    self.owner, self.count = ctx.cid, self.count + 1
    ctx.holds[self] = true
    return true
  end
  if timeout == 0 or ctx.expired then return false end
  return WAIT, timeout
end
function RLock:release(ctx)
  if self.owner ~= ctx.cid then fail("value", "cannot release an RLock this client does not hold") end
  self.count = self.count - 1
  if self.count == 0 then self.owner = nil ctx.holds[self] = nil end
end
function RLock:locked() return self.owner ~= nil end
function RLock:_drop(cid) if self.owner == cid then self.owner, self.count = nil, 0 end end

-- Semaphore: not owned (as Python's), so nothing is given back when a
-- client goes away.
local Semaphore = class("Semaphore")
function T.Semaphore(n)
  n = n == nil and 1 or n
  if type(n) ~= "number" or n < 0 then error("Semaphore value must be >= 0", 0) end
  return setmetatable({value = n}, Semaphore)
end
function Semaphore:acquire(ctx, a, b)
  local timeout = acquire_timeout(a, b)
  if self.value > 0 then self.value = self.value - 1 return true end
  if timeout == 0 or ctx.expired then return false end
  return WAIT, timeout
end
function Semaphore:release(_, n) self.value = self.value + (n or 1) end
function Semaphore:get_value() return self.value end

local Event = class("Event")
function T.Event() return setmetatable({flag = false}, Event) end
function Event:set() self.flag = true end
function Event:clear() self.flag = false end
function Event:is_set() return self.flag end
function Event:wait(ctx, timeout)
  timeout = timeout_of(timeout)
  if self.flag then return true end
  if timeout == 0 or ctx.expired then return false end
  return WAIT, timeout
end

---------------------------------------------------------------- Namespace
local Namespace = class("Namespace", "namespace")
function T.Namespace(init)
  local t = {}
  if type(init) == "table" then for k, v in pairs(init) do t[k] = v end end
  return setmetatable({t = t}, Namespace)
end
function Namespace:getattr(_, k) return self.t[k] end
function Namespace:setattr(_, k, v)
  if type(k) ~= "string" then error("Namespace attribute names are strings", 0) end
  self.t[k] = v
end
function Namespace:items()
  local r = {}
  for k, v in pairs(self.t) do r[k] = v end
  return r
end

-- The typeids a Manager serves, in the order of API.md.
T.TYPEIDS = {"dict", "list", "Queue", "JoinableQueue", "Value", "Lock", "RLock",
             "Semaphore", "Event", "Namespace"}

return T
