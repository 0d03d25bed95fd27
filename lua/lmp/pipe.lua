--- lmp.pipe: Pipe, Connection and wait.
--
-- A Connection is the userdata of lmp.c.pipe (a framed channel over any
-- stream fd) with the value-level methods below added to its class:
-- send/recv pickle values (a Lua string is sent raw, unpickled), and
-- send_bytes/recv_bytes move bytes. Connection(fd, opts) wraps any
-- connected stream fd (managers wrap TCP and Unix sockets with it).
local core = require "lmp.core"   -- first: it registers lmp.c.*
local C = require "lmp.c.pipe"
local pickle = require "lmp.pickle"
local decode = pickle.decoder()

local M = {}

local FR_PICKLE, FR_BYTES, FR_STRING = C.PICKLE, C.BYTES, C.STRING
-- conn -> "json"|"binary", chosen when the connection is made (codec =,
-- else lmp.set_codec's default); a connection from C.wrap alone is JSON.
local codec_of = setmetatable({}, {__mode = "k"})
local encoders = {json = pickle.encoder("json"), binary = pickle.encoder("binary")}

local pa, pb = C.socketpair()
local probe = C.wrap(pa)
local mt = getmetatable(probe)
probe:close()
C.wrap(pb):close()
local methods = mt.__index

function methods:send(v, timeout)
  if type(v) == "string" then
    return self:send_frame(FR_STRING, v, timeout)
  end
  return self:send_frame(FR_PICKLE, encoders[codec_of[self] or "json"](v, "value"), timeout)
end

--- codec() -> "json" or "binary": how send pickles values.
function methods:codec()
  return codec_of[self] or "json"
end

function methods:recv(timeout)
  local t, payload = self:recv_frame(timeout)
  if t == FR_STRING then return payload end
  if t == FR_PICKLE then return decode(payload) end
  return payload                             -- bytes sent with send_bytes
end

function methods:send_bytes(s, offset, size, timeout)
  if type(s) ~= "string" then
    error("bad argument #1 to 'send_bytes' (string expected, got " .. type(s) .. ")", 2)
  end
  if offset or size then            -- Python's checks, as argument errors
    offset = offset or 0
    local n = #s
    local function bad(why) error("bad argument to 'send_bytes' (" .. why .. ")", 3) end
    if type(offset) ~= "number" or offset % 1 ~= 0 then bad("offset must be an integer") end
    if size ~= nil and (type(size) ~= "number" or size % 1 ~= 0) then bad("size must be an integer") end
    if offset < 0 then bad("offset is negative") end
    if offset > n then bad("buffer length < offset") end
    if size == nil then size = n - offset
    elseif size < 0 then bad("size is negative")
    elseif offset + size > n then bad("buffer length < offset + size") end
    s = s:sub(offset + 1, offset + size)
  end
  return self:send_frame(FR_BYTES, s, timeout)
end

function methods:recv_bytes(timeout)
  local _, payload = self:recv_frame(timeout)
  return payload
end

-- Connections passed to a spawned child travel by fd (inherited at the
-- same number); to a forked child they are simply inherited.
-- Elsewhere (a queue, another pipe) an fd number would mean nothing to
-- the receiver, so pickling a connection is refused there.
mt.__pickle = function(self)
  local P = package.loaded["lmp.process"]
  local fds = type(P) == "table" and P._spawn_fds
  if not fds then
    error("a Connection can only be pickled as an argument of a spawned "
      .. "Process (it travels by fd)", 0)
  end
  local fd = self:fileno()
  fds[#fds + 1] = fd
  return {fd = fd, codec = codec_of[self], maxlen = self:maxlen()}
end
mt.__unpickle = function(state)
  local c = C.wrap(state.fd, state.maxlen)
  codec_of[c] = state.codec          -- the parent's, whatever the default here
  return c
end
pickle.register("lmp.Connection", mt)

-- opts.codec, or lmp.set_codec's default when absent.
local function check_codec(codec)
  local c = pickle.resolve_codec(codec)
  if not c then error("codec must be 'json' or 'binary'", 3) end
  return c
end

--- Connection(fd [, {maxlen=, codec=}]) wraps a connected stream fd.
function M.Connection(fd, opts)
  opts = opts or {}
  if type(fd) ~= "number" then
    error("bad argument #1 to 'Connection' (fd expected, got " .. type(fd) .. ")", 2)
  end
  local c = C.wrap(fd, opts)
  codec_of[c] = check_codec(opts.codec)
  return c
end

--- Pipe([{duplex = true, codec =, maxlen =}]) -> conn1, conn2.
-- duplex = false gives (reader, writer) over a pipe(2).
function M.Pipe(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'Pipe' (table or nil expected)", 2)
  end
  opts = opts or {}
  local codec = check_codec(opts.codec)
  local a, b
  if opts.duplex == false then a, b = C.pipe() else a, b = C.socketpair() end
  a, b = C.wrap(a, opts.maxlen), C.wrap(b, opts.maxlen)
  codec_of[a], codec_of[b] = codec, codec
  return a, b
end

local function fd_of(x)
  if type(x) == "number" then return x end
  if type(x) == "table" and rawget(x, "sentinel") then return x.sentinel end
  if type(x) == "table" and x.start then
    error("bad argument #1 to 'wait' (a process that is not started or is closed)", 3)
  end
  if getmetatable(x) == mt then return x:fileno() end
  error("bad argument #1 to 'wait' (connections, processes or fds expected, got "
    .. type(x) .. ")", 3)
end

--- wait(list, timeout) -> the connections, processes or fds ready now
-- (like multiprocessing.connection.wait). A process is ready once it ended.
function M.wait(list, timeout)
  if type(list) ~= "table" then
    error("bad argument #1 to 'wait' (table expected)", 2)
  end
  local fds, by_fd = {}, {}
  for _, x in ipairs(list) do
    local fd = fd_of(x)
    fds[#fds + 1] = fd
    by_fd[fd] = by_fd[fd] or {}
    table.insert(by_fd[fd], x)
  end
  local ready = {}
  for _, fd in ipairs(C.poll_fds(fds, timeout)) do
    for _, x in ipairs(by_fd[fd]) do ready[#ready + 1] = x end
    by_fd[fd] = {}
  end
  local _ = core
  return ready
end

return M
