--- lmp.connection: Listener and Client (Python's multiprocessing.connection).
--
--   local L = lmp.connection
--   local l <close> = L.Listener{address = {"127.0.0.1", 0}, authkey = "s3cret"}
--   -- l.address = {"127.0.0.1", 40213}: the port the kernel chose
--   local c = L.Client(l.address, {authkey = "s3cret", timeout = 5})
--   local s = l:accept(5)             -- an lmp.Connection, as lmp.Pipe gives
--   c:send({1, 2}); s:recv(5)         --> {1, 2}
--
-- Sockets come from lmp.c.socket (core/net.c): close-on-exec, non-blocking,
-- TCP_NODELAY. With an authkey both sides run the managers' HMAC handshake
-- (core/auth.h, bound in lmp.c.connection) before the connection is
-- handed out: nothing a peer sends is decoded until it proved the key.
-- The connection is then an lmp.Connection (lua/lmp/pipe.lua): frames,
-- send/recv/poll/send_bytes/recv_bytes, and lmp.wait.
local core = require "lmp.core"   -- first: it registers lmp.c.*
local S = require "lmp.c.socket"
local C = require "lmp.c.connection"
local pickle = require "lmp.pickle"
local pipe = require "lmp.pipe"

local M = {}
local new_error = core.error

local function argerror(fn, n, msg)
  error("bad argument #" .. n .. " to '" .. fn .. "' (" .. msg .. ")", 3)
end

-- {host, port} (a copy) or a Unix socket path.
local function check_address(fn, n, a)
  if type(a) == "string" and a ~= "" then return a end
  if type(a) == "table" and type(a[1]) == "string" and type(a[2]) == "number"
      and a[2] % 1 == 0 and a[2] >= 0 and a[2] <= 65535 then
    return {a[1], a[2]}
  end
  argerror(fn, n, "address must be {host, port} or a Unix socket path")
end

local function check_key(fn, n, key)
  if key ~= nil and (type(key) ~= "string" or #key == 0 or #key > 256) then
    argerror(fn, n, "authkey must be a string of 1 to 256 bytes")
  end
  return key
end

local function check_timeout(fn, n, t, what)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    argerror(fn, n, (what or "timeout") .. " must be a number >= 0")
  end
  return t
end

local function check_opts(fn, n, o, allowed)
  if o == nil then return {} end
  if type(o) ~= "table" then argerror(fn, n, "table of options expected") end
  for k in pairs(o) do
    if not allowed[k] then argerror(fn, n, "unknown option '" .. tostring(k) .. "'") end
  end
  if o.codec ~= nil and not pickle.resolve_codec(o.codec) then
    argerror(fn, n, "codec must be 'json' or 'binary'")
  end
  return o
end

local function addr_text(a)
  if type(a) == "string" then return a end
  if a[1]:find(":", 1, true) then return "[" .. a[1] .. "]:" .. a[2] end
  return (a[1] == "" and "*" or a[1]) .. ":" .. a[2]
end

--- check_bind(address, authkey): raises unless serving on address is
-- allowed. As for a manager (lua/lmp/manager.lua), a listener without an
-- authkey serves only on loopback addresses and Unix sockets: anyone who
-- can reach another address could send it values to decode. Like the
-- manager's, the refusal is a plain error (a misuse, not an operational
-- failure), raised before any socket exists; there is no override.
function M.check_bind(address, authkey)
  if authkey == nil and type(address) == "table" and not C.is_loopback(address[1]) then
    error("refusing to listen on " .. addr_text(address) .. " without an authkey: pass "
      .. "authkey = <secret> (anyone who can reach a non-loopback address could "
      .. "send it values to decode)", 3)
  end
end

-- "host:port" / "[v6]:port" (lmp.Stream's peer) -> {host, port}; a Unix
-- peer has no address: "" (as Python's last_accepted).
local function peer_address(s)
  local h, p = s:match("^%[(.*)%]:(%d+)$")
  if not h then h, p = s:match("^(.*):(%d+)$") end
  if h then return {h, tonumber(p)} end
  return ""
end

local function conn_opts(o)
  return {codec = o.codec, maxlen = o.maxlen}
end

-- Wraps fd; with a key, runs auth(fd, key, timeout, who) first. The
-- connection is closed when the handshake fails (kind, message raised).
local function finish(fd, o, auth, left, who, timeout_kind)
  local conn = pipe.Connection(fd, conn_opts(o))
  if o.authkey then
    local ok, kind, msg = auth(fd, o.authkey, left, who)
    if not ok then
      conn:close()
      if kind == "timeout" and timeout_kind then kind = timeout_kind end
      error(new_error(kind, msg), 3)
    end
  end
  return conn
end

---------------------------------------------------------------- Listener

local Listener = {}
Listener.__index = Listener

local listener_opts = {address = true, authkey = true, backlog = true, codec = true,
                       maxlen = true, handshake_timeout = true}

--- Listener{address = {host, port} | path, authkey =, backlog = 128,
-- codec =, maxlen =, handshake_timeout = 5} (or Listener(address, opts)).
function M.Listener(a, o)
  if type(a) == "table" and a[1] == nil then o, a = a, a.address end
  o = check_opts("Listener", 1, o, listener_opts)
  local address = check_address("Listener", 1, a or o.address or {"127.0.0.1", 0})
  local key = check_key("Listener", 1, o.authkey)
  check_timeout("Listener", 1, o.handshake_timeout, "handshake_timeout")
  local backlog = o.backlog or 128
  if type(backlog) ~= "number" or backlog % 1 ~= 0 or backlog < 1 or backlog > 65535 then
    argerror("Listener", 1, "backlog must be an integer from 1 to 65535")
  end
  M.check_bind(address, key)
  local self = setmetatable({_authkey = key, last_accepted = nil, _codec = o.codec,
    _maxlen = o.maxlen, _hs = o.handshake_timeout or 5}, Listener)
  if type(address) == "string" then
    local free, why = C.path_free(address)
    if not free then error(new_error("os", why), 2) end
    self._sock = S.listen_unix(address, backlog)
    self._path = C.path_guard(address)     -- removes the file on close/gc
    self.address = address
  else
    self._sock = S.listen(address[1], address[2], backlog)
    self.address = {self._sock.host, self._sock.port}
  end
  return self
end

--- accept([timeout]) -> lmp.Connection. With an authkey the peer must
-- prove it first (within handshake_timeout, and within timeout): a peer
-- that does not raises `auth` here and is closed; the listener goes on.
-- `timeout` when no peer came (or the handshake outlasted timeout).
function Listener:accept(timeout)
  check_timeout("accept", 1, timeout)
  local sock = self._sock
  if not sock or sock:closed() then
    error(new_error("closed", "listener is closed"), 2)
  end
  local deadline = timeout and core.time() + timeout
  local s = sock:accept(timeout)
  local peer = s.peer
  local fd = s:detach()
  self.last_accepted = peer_address(peer)
  local left, kind = self._hs, "auth"
  if deadline and deadline - core.time() < left then
    left, kind = math.max(0, deadline - core.time()), nil
  end
  local who = "client at " .. (peer == "unix" and tostring(self.address) or peer)
  return finish(fd, {authkey = self._authkey, codec = self._codec, maxlen = self._maxlen},
    C.auth_server, left, who, kind)
end

function Listener:fileno()
  if not self._sock or self._sock:closed() then
    error(new_error("closed", "listener is closed"), 2)
  end
  return self._sock:fileno()
end

function Listener:closed() return not self._sock or self._sock:closed() end

--- close(): closes the socket and removes a Unix socket's file (only in
-- the process that made the listener). Idempotent.
function Listener:close()
  if self._sock then self._sock:close() end
  if self._path then self._path:close() self._path = nil end
end

Listener.__close = Listener.close
Listener.__gc = function(self) self:close() end   -- 5.4; 5.1: the guards' own __gc
Listener.__tostring = function(self)
  return string.format("lmp.Listener(%s%s)", addr_text(self.address),
    self:closed() and ", closed" or "")
end

---------------------------------------------------------------- Client

local client_opts = {authkey = true, timeout = true, codec = true, maxlen = true}

--- Client(address [, {authkey =, timeout =, codec =, maxlen =}]) ->
-- lmp.Connection, connected (and with an authkey, authenticated both
-- ways) within timeout (default: none).
function M.Client(address, o)
  address = check_address("Client", 1, address)
  o = check_opts("Client", 2, o, client_opts)
  check_key("Client", 2, o.authkey)
  check_timeout("Client", 2, o.timeout)
  local deadline = o.timeout and core.time() + o.timeout
  local s
  if type(address) == "string" then s = S.connect_unix(address, o.timeout)
  else s = S.connect(address[1], address[2], o.timeout) end
  local fd = s:detach()
  local left = deadline and math.max(0, deadline - core.time())
  return finish(fd, o, C.auth_client, left, "listener at " .. addr_text(address))
end

M.wait = pipe.wait
M.as_completed = pipe.as_completed
M._Listener = Listener
return M
