--- lmp.manager: BaseManager, Manager and their proxies.
--
-- A manager serves objects from one process to clients on this machine
-- or others, over TCP or a Unix socket. The server (core/server.c, bound
-- as lmp.c.manager) runs the authkey handshake (core/auth.h) before it
-- reads one byte of a request; requests are then frames holding
--   {"call", object id, method, args, n} | {"create", typeid, args, n}
--   | {"ping"} | {"shutdown"}
-- pickled by lmp.pickle and decoded with functions refused (unless the
-- manager was made with allow_code = true). Replies are
--   {true, results, n} | {false, {kind=, message=, traceback=}}.
-- The server is one loop (serve below): a call that would wait (get on an
-- empty queue) is parked, never blocks the others (lmp.manager_types).
--
-- Clients keep one connection per manager address and process; a proxy
-- used in a forked child opens the child's own connection (the parent's
-- socket is never shared: replies would interleave).
local core = require "lmp.core"
local C = require "lmp.c.manager"
local proc = require "lmp.c.proc"
local pickle = require "lmp.pickle"
local P = require "lmp.process"
local T = require "lmp.manager_types"

local M = {}
local unpack = table.unpack or unpack
local MAX_ARGS = 250
local dumps, loads = pickle.dumps, pickle.loads

local function pack(...) return {...}, select("#", ...) end

-- xpcall(f, handler, args...) -> pcall-like results; Lua 5.1's xpcall
-- takes no arguments for f, so a closure carries them there.
local xpcall_args = select(2, xpcall(function(a) return a end, print, true)) and xpcall
  or function(f, h, ...)
    local args, n = pack(...)
    return xpcall(function() return f(unpack(args, 1, n)) end, h)
  end

local new_error = core.error   -- (kind, msg, fields): an error object

---------------------------------------------------------------- addresses
-- {host, port} for TCP, a path string for a Unix socket.
local function check_address(a, fn)
  if type(a) == "string" and a ~= "" then return a end
  if type(a) == "table" and type(a[1]) == "string" and type(a[2]) == "number" then
    return {a[1], a[2]}
  end
  error("bad address to '" .. fn .. "' ({host, port} or a Unix socket path expected)", 3)
end

local key_cache = setmetatable({}, {__mode = "k"})
local function addr_key(a)
  if type(a) == "string" then return "unix:" .. a end
  local k = key_cache[a]
  if not k then k = a[1] .. ":" .. a[2] key_cache[a] = k end
  return k
end

-- A Unix socket path, or a numeric loopback address or "localhost" (a
-- name that merely starts with "127." is not loopback).
local function is_loopback(a)
  if type(a) == "string" then return true end
  return require("lmp.c.connection").is_loopback(a[1])
end

---------------------------------------------------------------- client side
local keys = {}        -- address key -> authkey (inherited by fork)
local code_ok = {}     -- address key -> allow_code
local conns = {}       -- address key -> {conn =, pid =}
local my_pid = proc.getpid()

P.atfork{child = function()
  my_pid = proc.getpid()
  -- The parent's sockets: close our copies, never talk on them.
  for k, c in pairs(conns) do pcall(c.conn.close, c.conn) conns[k] = nil end
end}

local function authkey_for(k) return keys[k] or P._authkey() end

-- A spawned child gets the keys of the managers this process knows (over
-- the spawn pipe, as it gets the process authkey), so proxies passed to
-- it work whatever key their manager has.
P._spawn_hooks["lmp.manager"] = function() return {keys = keys, code_ok = code_ok} end
function M._spawn_restore(state)
  for k, v in pairs(state.keys or {}) do keys[k] = v end
  for k, v in pairs(state.code_ok or {}) do code_ok[k] = v end
end

local function connect_timeout() return 10 end

-- One connection per (address, key) and process.
local function connection(addr, key)
  local k = addr_key(addr)
  key = key or authkey_for(k)
  local ck = k .. "\0" .. key
  local c = conns[ck]
  if c and c.pid == my_pid and not c.conn:closed() then return c end
  local fd = C.connect(addr, key, connect_timeout())
  c = {conn = C.client(fd), pid = my_pid, key = ck, addr = k}
  conns[ck] = c
  return c
end

local function drop_connection(c)
  if conns[c.key] == c then conns[c.key] = nil end
  pcall(c.conn.close, c.conn)
end

local function remote_error(e)
  if type(e) ~= "table" then e = {kind = "remote", message = tostring(e)} end
  local kind = type(e.kind) == "string" and e.kind or "remote"
  return new_error(kind, tostring(e.message), {traceback = e.traceback})
end

-- request(addr, req [, key]) -> results table, n (raises the remote error)
local function request(addr, req, key)
  local out = dumps(req)
  local c = connection(addr, key)
  local ok, payload = pcall(c.conn.call, c.conn, out)
  if not ok then
    drop_connection(c)                  -- out of step or gone: never reuse
    error(payload, 0)
  end
  local okl, rep = pcall(loads, payload, {functions = code_ok[c.addr] or false})
  if not okl or type(rep) ~= "table" then
    drop_connection(c)
    error(new_error("broken", "bad reply from the manager: " .. tostring(rep)), 0)
  end
  if rep[1] == true then return rep[2] or {}, rep[3] or 0 end
  error(remote_error(rep[2]), 0)
end

---------------------------------------------------------------- proxies
-- A proxy is a table {_addr, _id, _typeid}; its class travels by name
-- (lmp.pickle.register) so proxies passed to pool workers and processes
-- keep working there (each process opens its own connection).
local Proxy, ValueProxy, NamespaceProxy = {}, {}, {}
local method_cache = {}

local function call(self, name, ...)
  local args, n = pack(...)
  local r, rn = request(rawget(self, "_addr"), {"call", rawget(self, "_id"), name, args, n})
  return unpack(r, 1, rn)
end

local function method(name)
  local f = method_cache[name]
  if not f then
    f = function(self, ...) return call(self, name, ...) end
    method_cache[name] = f
  end
  return f
end

local function private(k) return type(k) ~= "string" or k:byte(1) == 95 end  -- "_"

local function proxy_tostring(self)
  local a = rawget(self, "_addr")
  return string.format("lmp.Proxy(%s #%s at %s)", tostring(rawget(self, "_typeid")),
    tostring(rawget(self, "_id")), type(a) == "table" and addr_key(a) or tostring(a))
end

-- What a script stores on a proxy itself stays in this process, as in
-- Python (a proxy pickles as its token): it lives here, not in the proxy
-- table, whose only fields are the token's.
local locals = setmetatable({}, {__mode = "k"})

local function get_local(self, k)
  local t = locals[self]
  return t and t[k]
end

local function set_local(self, k, v)
  local t = locals[self]
  if not t then t = {}; locals[self] = t end
  t[k] = v
end

Proxy.__index = function(self, k)
  if private(k) then return get_local(self, k) end
  return method(k)
end
Proxy.__newindex = set_local
Proxy.__tostring = proxy_tostring

ValueProxy.__index = function(self, k)
  if k == "value" then return call(self, "get") end
  if private(k) then return get_local(self, k) end
  return method(k)
end
ValueProxy.__newindex = function(self, k, v)
  if k == "value" then return call(self, "set", v) end
  set_local(self, k, v)
end
ValueProxy.__tostring = proxy_tostring

NamespaceProxy.__index = function(self, k)
  if private(k) then return get_local(self, k) end
  return call(self, "getattr", k)
end
NamespaceProxy.__newindex = function(self, k, v)
  if private(k) then return set_local(self, k, v) end
  call(self, "setattr", k, v)
end
NamespaceProxy.__tostring = proxy_tostring

pickle.register("lmp.Proxy", Proxy)
pickle.register("lmp.ValueProxy", ValueProxy)
pickle.register("lmp.NamespaceProxy", NamespaceProxy)

local proxy_classes = {value = ValueProxy, namespace = NamespaceProxy}

local function make_proxy(addr, id, typeid, kind)
  return setmetatable({_addr = addr, _id = id, _typeid = typeid},
                      proxy_classes[kind] or Proxy)
end

--- is_proxy(x) -> true for a manager's proxy
function M.is_proxy(x)
  local mt = getmetatable(x)
  return mt == Proxy or mt == ValueProxy or mt == NamespaceProxy
end

---------------------------------------------------------------- server side
local Server = {}
Server.__index = Server

-- The message handler of calls in the server: lmp errors pass as they
-- are; others are wrapped with the server-side traceback.
local function traceback(e)
  if core.is_error(e) then return e end
  return {message = tostring(e), traceback = debug.traceback(tostring(e), 2)}
end

local function err_reply(e)
  if core.is_error(e) then
    return {false, {kind = e.kind, message = e.message, traceback = e.traceback}}
  end
  if type(e) == "table" and e.traceback then
    return {false, {kind = "remote", message = e.message, traceback = e.traceback}}
  end
  return {false, {kind = "remote", message = tostring(e)}}
end

function Server:send(cid, rep)
  local ok, out = pcall(dumps, rep)
  if not ok then
    out = dumps(err_reply(new_error("pickle", "cannot pickle the result: "
      .. tostring(core.is_error(out) and out.message or out))))
  end
  local sent, why = self.srv:send(cid, out)
  if not sent and why == "dropped" then self:closed(cid) end
end

-- The context a served object's methods get (see lmp.manager_types).
function Server:ctx(cid, expired)
  local c = self.ctxs[cid]
  if not c then
    local holds = self.holds
    c = {cid = cid, holds = {}, holds_of = function(other) return holds[other] end}
    holds[cid] = c.holds
    self.ctxs[cid] = c
  end
  c.expired = expired
  return c
end

-- Runs obj's method for cid: the reply, or nil when parked (WAIT).
function Server:invoke(cid, ent, name, args, n, expired)
  local obj, served = ent.obj, ent.served
  local f = obj[name]
  if type(f) ~= "function" then
    return err_reply(new_error("value", string.format("%s has no method '%s'",
      ent.typeid, name)))
  end
  local r, rn
  if served then
    local ctx = self:ctx(cid, expired)
    r, rn = pack(xpcall_args(f, traceback, obj, ctx, unpack(args, 1, n)))
  else
    r, rn = pack(xpcall_args(f, traceback, obj, unpack(args, 1, n)))
  end
  if not r[1] then return err_reply(r[2]) end
  if r[2] == T.WAIT then return nil, r[3] end
  return {true, {unpack(r, 2, rn)}, rn - 1}
end

function Server:park(cid, oid, name, args, n, timeout)
  local list = self.parked[oid]
  if not list then list = {} self.parked[oid] = list end
  list[#list + 1] = {cid = cid, name = name, args = args, n = n,
                     deadline = timeout and core.time() + timeout}
  self.nparked = self.nparked + 1
end

-- Tries the calls parked on oid again, oldest first, until none moves.
function Server:retry(oid)
  local list = self.parked[oid]
  local moved = true
  while list and moved and #list > 0 do
    moved = false
    for i = 1, #list do
      local w = list[i]
      -- A caller that has gone must not take an item it can never receive.
      local rep = not self.srv:alive(w.cid) and true
        or self:invoke(w.cid, self.objects[oid], w.name, w.args, w.n, false)
      if rep == true then
        table.remove(list, i)
        self.nparked = self.nparked - 1
        moved = true
        break
      elseif rep then
        table.remove(list, i)
        self.nparked = self.nparked - 1
        self:send(w.cid, rep)
        moved = true
        break
      end
    end
  end
  if list and #list == 0 then self.parked[oid] = nil end
end

-- Answers the parked calls whose time is up; returns the next deadline.
function Server:expire()
  if self.nparked == 0 then return nil end
  local now, next_dl = core.time(), nil
  for oid, list in pairs(self.parked) do
    local i = 1
    while i <= #list do
      local w = list[i]
      if w.deadline and w.deadline <= now then
        table.remove(list, i)
        self.nparked = self.nparked - 1
        local rep = self:invoke(w.cid, self.objects[oid], w.name, w.args, w.n, true)
        self:send(w.cid, rep or err_reply(new_error("timeout", "timed out")))
      else
        if w.deadline and (not next_dl or w.deadline < next_dl) then next_dl = w.deadline end
        i = i + 1
      end
    end
    if #list == 0 then self.parked[oid] = nil end
  end
  return next_dl
end

function Server:closed(cid)
  for oid, list in pairs(self.parked) do
    for i = #list, 1, -1 do
      if list[i].cid == cid then
        table.remove(list, i)
        self.nparked = self.nparked - 1
      end
    end
    if #list == 0 then self.parked[oid] = nil end
  end
  local held = self.holds[cid]
  self.holds[cid], self.ctxs[cid] = nil, nil
  if held then
    for obj in pairs(held) do
      if obj._drop then obj:_drop(cid) end
      if self.ids[obj] then self:retry(self.ids[obj]) end
    end
  end
end

function Server:register_object(obj, typeid)
  local id = self.ids[obj]
  if id then return id, self.objects[id] end
  self.next_id = self.next_id + 1
  id = self.next_id
  local mt = getmetatable(obj)
  local served = type(mt) == "table" and rawget(mt, "__served")
  local ent = {obj = obj, typeid = typeid, served = served ~= nil and served ~= false,
               kind = type(mt) == "table" and rawget(mt, "__proxy") or nil}
  self.objects[id], self.ids[obj] = ent, id
  return id, ent
end

function Server:create(cid, typeid, args, n)
  local reg = self.registry[typeid]
  if type(typeid) ~= "string" or not reg or not reg.factory then
    return self:send(cid, err_reply(new_error("value",
      "no type or function named '" .. tostring(typeid) .. "' is registered")))
  end
  local ok, obj = xpcall_args(reg.factory, traceback, unpack(args, 1, n))
  if not ok then return self:send(cid, err_reply(obj)) end
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" then
    return self:send(cid, err_reply(new_error("value", string.format(
      "'%s' returned a %s: a registered function must return an object (table or userdata)",
      typeid, t))))
  end
  local id, ent = self:register_object(obj, typeid)
  self:send(cid, {true, {id, typeid, reg.proxytype or ent.kind}, 3})
end

function Server:call(cid, id, name, args, n)
  local ent = self.objects[id]
  if not ent then
    return self:send(cid, err_reply(new_error("value", "no object #" .. tostring(id))))
  end
  if private(name) then
    return self:send(cid, err_reply(new_error("value",
      "method name must be a string not starting with '_'")))
  end
  local reg = self.registry[ent.typeid]
  if reg and reg.exposed and not reg.exposed[name] then
    return self:send(cid, err_reply(new_error("value", string.format(
      "method '%s' of %s is not exposed", name, ent.typeid))))
  end
  local rep, timeout = self:invoke(cid, ent, name, args, n, false)
  if rep then
    self:send(cid, rep)
    if self.parked[id] then self:retry(id) end
  else
    self:park(cid, id, name, args, n, timeout)
  end
end

local function valid_args(args, n)
  return type(args) == "table" and type(n) == "number" and n >= 0 and n <= MAX_ARGS
    and n == math.floor(n)
end

function Server:handle(cid, payload)
  local ok, req = pcall(loads, payload, {functions = self.allow_code})
  if not ok or type(req) ~= "table" then
    local why = core.is_error(req) and req.message or tostring(req)
    return self:send(cid, err_reply(new_error("pickle", "bad request: " .. why)))
  end
  local op = req[1]
  if op == "call" and valid_args(req[4], req[5]) then
    return self:call(cid, req[2], req[3], req[4], req[5])
  elseif op == "create" and valid_args(req[3], req[4]) then
    return self:create(cid, req[2], req[3], req[4])
  elseif op == "ping" then
    return self:send(cid, {true, {"pong", P.current_process().pid}, 2})
  elseif op == "shutdown" then
    self.stopping = true
    return self:send(cid, {true, {}, 0})
  end
  self:send(cid, err_reply(new_error("value", "bad request (unknown operation or arguments)")))
end

function Server:run(on_denied)
  while not self.stopping do
    local dl = self:expire()
    local wait = dl and math.max(0, dl - core.time()) or nil
    local ev = self.srv:step(wait)
    for i = 1, #ev, 3 do
      local kind, cid, data = ev[i], ev[i + 1], ev[i + 2]
      if kind == "request" then self:handle(cid, data)
      elseif kind == "closed" then self:closed(cid)
      elseif kind == "denied" then on_denied(data) end
    end
  end
end

---------------------------------------------------------------- BaseManager
local BaseManager = {}
BaseManager.__index = BaseManager

-- Failed handshakes are logged, at most a few lines a second: a flood of
-- bad peers must not flood the log too.
local denied = {window = 0, lines = 0, quiet = 0}
local function log_denied(peer)
  local now = core.time()
  if now - denied.window >= 1 then
    if denied.quiet > 0 then
      peer = peer .. " (and " .. denied.quiet .. " more in the last second)"
    end
    denied.window, denied.lines, denied.quiet = now, 0, 0
  end
  denied.lines = denied.lines + 1
  if denied.lines > 3 then denied.quiet = denied.quiet + 1 return end
  local ok, log = pcall(require, "lmp.log")
  local msg = "manager: a client at " .. tostring(peer) .. " failed authentication; closed"
  if ok and log.warning then log.warning("%s", msg)
  else io.stderr:write(msg, "\n") end
end

local function check_opts(o, fn)
  if o ~= nil and type(o) ~= "table" then
    error("bad argument #1 to '" .. fn .. "' (table of options expected)", 3)
  end
  o = o or {}
  if o.authkey ~= nil and (type(o.authkey) ~= "string" or #o.authkey == 0 or #o.authkey > 256) then
    error("bad authkey to '" .. fn .. "' (a string of 1 to 256 bytes expected)", 3)
  end
  return o
end

--- BaseManager{address = {host, port} | path, authkey =, allow_code =,
-- handshake_timeout = 5, max_clients = 1024, max_request = 64 MiB}
function M.BaseManager(o)
  o = check_opts(o, "BaseManager")
  local self = setmetatable({
    address = check_address(o.address or {"127.0.0.1", 0}, "BaseManager"),
    _explicit_key = o.authkey ~= nil,
    _authkey = o.authkey or P._authkey(),
    _allow_code = o.allow_code == true,
    _srv_opts = {handshake_timeout = o.handshake_timeout, max_clients = o.max_clients,
                 maxlen = o.max_request, max_out = o.max_unread},
    _registry = {},
    _state = "initial",
  }, BaseManager)
  return self
end

--- register(typeid [, factory [, {exposed = {names}, proxytype = "value" |
-- "namespace", create_method = true}]]): m:typeid(...) then returns a
-- proxy of what factory(...) returns in the server. A client that only
-- connects registers names without factories.
function BaseManager:register(typeid, factory, opts)
  if type(typeid) ~= "string" or typeid == "" or typeid:sub(1, 1) == "_" then
    error("bad argument #1 to 'register' (a name not starting with '_' expected)", 2)
  end
  if factory ~= nil and type(factory) ~= "function" then
    error("bad argument #2 to 'register' (function or nil expected)", 2)
  end
  opts = opts or {}
  local exposed
  if opts.exposed then
    exposed = {}
    for _, name in ipairs(opts.exposed) do exposed[name] = true end
  end
  self._registry[typeid] = {factory = factory, exposed = exposed, proxytype = opts.proxytype}
  if opts.create_method ~= false and rawget(self, typeid) == nil then
    self[typeid] = function(me, ...) return me:_create(typeid, ...) end
  end
end

function BaseManager:_remember()
  local k = addr_key(self.address)
  keys[k] = self._authkey
  code_ok[k] = self._allow_code
end

function BaseManager:_create(typeid, ...)
  if self._state ~= "started" and self._state ~= "connected" then
    error(new_error("closed", "manager is not started or connected (" .. self._state .. ")"), 2)
  end
  local args, n = pack(...)
  local r = request(self.address, {"create", typeid, args, n}, self._authkey)
  return make_proxy(self.address, r[1], r[2], r[3])
end

function BaseManager:_check_bind(level)
  if not self._explicit_key and not is_loopback(self.address) then
    error("refusing to serve on " .. addr_key(self.address) .. " without an explicit "
      .. "authkey: pass authkey = <secret> (a generated key would be unknown to "
      .. "remote clients, and a guessable one is remote code execution)", level + 1)
  end
end

function BaseManager:_listen()
  self:_check_bind(3)
  local fd, host, port = C.listen(self.address)
  self.address = type(self.address) == "string" and self.address or {host, port}
  return C.server(fd, self._authkey, self._srv_opts)
end

function BaseManager:_server(srv)
  return setmetatable({srv = srv, registry = self._registry, objects = {}, ids = {},
                       next_id = 0, parked = {}, nparked = 0, holds = {}, ctxs = {},
                       allow_code = self._allow_code}, Server)
end

--- serve_forever(): serves in this process until a client calls shutdown
-- (or SIGINT/SIGTERM in the runtime).
function BaseManager:serve_forever(ready)
  local srv = self:_listen()
  self:_remember()
  self._state = "serving"
  if ready then ready(self.address) end
  local server = self:_server(srv)
  local ok, e = pcall(server.run, server, log_denied)
  srv:close()
  self._state = "shutdown"
  if not ok and not core.is_error(e, "interrupted") then error(e, 0) end
end

--- start([initializer [, initargs]]): serves from a child process; returns
-- once it listens (self.address then holds the port it got).
function BaseManager:start(initializer, initargs)
  if self._state ~= "initial" then
    error(new_error("value", "manager already " .. self._state), 2)
  end
  self:_check_bind(2)
  local Pipe = require("lmp.pipe").Pipe
  local r, w = Pipe{duplex = false, codec = "json"}   -- managers speak JSON, whatever lmp.set_codec says
  local me = self
  local proc_ = P.get_context("fork").Process{
    name = "Manager", daemon = true,
    target = function()
      r:close()
      if initializer then initializer(unpack(initargs or {})) end
      local ok, e = pcall(me.serve_forever, me, function(addr) w:send({true, addr}) end)
      if not ok then pcall(w.send, w, {false, tostring(e)}) end
    end}
  proc_:start()
  w:close()
  local ok, msg = pcall(r.recv, r, 30)
  r:close()
  if not ok or type(msg) ~= "table" or not msg[1] then
    proc_:terminate()
    proc_:join(5)
    error(new_error("broken", "manager process failed to start: "
      .. tostring(ok and msg and msg[2] or msg)), 2)
  end
  self.address = msg[2]
  self._process = proc_
  self._state = "started"
  self:_remember()
end

--- connect(): checks the manager answers and proves the authkey.
function BaseManager:connect()
  request(self.address, {"ping"}, self._authkey)
  self:_remember()
  self._state = "connected"
end

--- shutdown(): stops a manager started by this object (its proxies stop
-- working); for a connected client, asks the server to stop.
function BaseManager:shutdown(timeout)
  if self._state ~= "started" and self._state ~= "connected" then return end
  pcall(request, self.address, {"shutdown"}, self._authkey)
  local prefix = addr_key(self.address) .. "\0"
  for ck, c in pairs(conns) do
    if ck:sub(1, #prefix) == prefix then drop_connection(c) end
  end
  if self._process then
    if not self._process:join(timeout or 5) then
      self._process:terminate()
      self._process:join(5)
    end
  end
  self._state = "shutdown"
end

--- pid of the server process started by start() (nil otherwise).
function BaseManager:pid() return self._process and self._process.pid end

BaseManager.__close = function(self) self:shutdown() end
BaseManager.__tostring = function(self)
  return string.format("lmp.BaseManager(%s, %s)", addr_key(self.address), self._state)
end

--- Manager{...}: a BaseManager with dict, list, Queue, JoinableQueue,
-- Value, Lock, RLock, Semaphore, Event and Namespace registered.
function M.Manager(o)
  local m = M.BaseManager(o)
  for _, typeid in ipairs(T.TYPEIDS) do m:register(typeid, T[typeid]) end
  return m
end

M.types = T
return M
