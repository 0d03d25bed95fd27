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

-- An AsyncResult of a Pool, ThreadPool or RedisPool: its pool drives it.
local function is_result(x)
  return type(x) == "table" and type(rawget(x, "_pool")) == "table"
    and type(x.ready) == "function"
end

local function fd_of(x, fname)
  if type(x) == "number" then return x end
  if type(x) == "table" and rawget(x, "sentinel") then return x.sentinel end
  if type(x) == "table" and x.start then
    error("bad argument #1 to '" .. fname .. "' (a process that is not started or is closed)", 4)
  end
  if getmetatable(x) == mt then return x:fileno() end
  -- anything else with fileno(): a Listener, an lmp.Socket or lmp.Stream
  local ok, f = pcall(function() return x.fileno end)
  if ok and type(f) == "function" then return f(x) end
  error("bad argument #1 to '" .. fname .. "' (connections, processes, listeners, "
    .. "results or fds expected, got " .. type(x) .. ")", 4)
end

-- How wait drives the pools of unfinished results. Pools of lmp.pool
-- (Pool, ThreadPool) wake it through fileno(); others (RedisPool: its fd
-- only signals a reply to a request in flight) are polled, every TICK_MAX
-- seconds at the slowest.
local TICK_MIN, TICK_MAX = 0.002, 0.025

local function pool_fd(pool)
  local P = package.loaded["lmp.pool"]
  if not (P and getmetatable(pool) == P._pool_mt) then return nil end
  if pool._state == "done" or not pool.ep then return nil end
  if pool._owner ~= require("lmp.c.proc").getpid() then return nil end
  return pool:fileno()
end

-- Splits list into what to poll: fds (distinct), fd_at[i] (the fd of
-- list[i], or false for a result), results, pools (pool -> its fd, or
-- false when it must be polled).
local function classify(list, fname)
  local fds, fd_at, results, pools, have = {}, {}, {}, {}, {}
  for i, x in ipairs(list) do
    if is_result(x) then
      fd_at[i] = false
      results[#results + 1] = x
      local pool = x._pool
      if pools[pool] == nil then pools[pool] = pool_fd(pool) or false end
    else
      local fd = fd_of(x, fname)
      fd_at[i] = fd
      if not have[fd] then fds[#fds + 1] = fd have[fd] = true end
    end
  end
  for _, fd in pairs(pools) do
    if fd and not have[fd] then fds[#fds + 1] = fd have[fd] = true end
  end
  return {list = list, fds = fds, fd_at = fd_at, results = results, pools = pools}
end

local function any_ready(results)
  for _, r in ipairs(results) do
    if r:ready() then return true end
  end
  return false
end

-- One look: runs the pools' due work (poll(0)), then returns the ready
-- objects in list order, first waiting up to `block` seconds (nil: no
-- limit) on the fds when no result is ready yet.
local function look(w, block)
  for pool in pairs(w.pools) do
    if pool._state ~= "done" then pool:poll(0) end
  end
  local done = any_ready(w.results)
  local readable = {}
  if #w.fds > 0 or (block ~= 0 and not done) then
    for _, fd in ipairs(C.poll_fds(w.fds, done and 0 or block)) do readable[fd] = true end
  end
  local ready, seen = {}, {}
  for i, x in ipairs(w.list) do
    local fd = w.fd_at[i]
    local ok
    if fd then ok = readable[fd] else ok = x:ready() end
    if ok and not seen[x] then ready[#ready + 1] = x seen[x] = true end
  end
  return ready
end

-- The only pool to poll when nothing else is waited on (a RedisPool
-- alone): its own poll(timeout) can then block in Redis.
local function solo_pool(w)
  if #w.fds > 0 then return nil end
  local only = next(w.pools)
  if only == nil or next(w.pools, only) ~= nil or w.pools[only] then return nil end
  return only
end

local function check_args(fname, list, timeout)
  if type(list) ~= "table" then
    error("bad argument #1 to '" .. fname .. "' (table expected)", 3)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("bad argument #2 to '" .. fname .. "' (timeout must be a number >= 0 or nil)", 3)
  end
end

--- wait(list [, timeout]) -> the objects of list that are ready now, in
-- list order (like multiprocessing.connection.wait): connections and fds
-- with data or EOF, processes that ended, listeners with a connection to
-- accept, and AsyncResults (Pool, ThreadPool, RedisPool) that are done.
-- Waits up to timeout seconds (nil: forever) for the first; {} when none.
function M.wait(list, timeout)
  check_args("wait", list, timeout)
  local w = classify(list, "wait")
  local ticking = false     -- a pool that must be polled: RedisPool
  for _, fd in pairs(w.pools) do if not fd then ticking = true end end
  local solo = solo_pool(w)
  local deadline = timeout and core.time() + timeout
  local tick = TICK_MIN
  while true do
    local left = deadline and math.max(0, deadline - core.time())
    local block = left
    if ticking and (block == nil or block > tick) then block = tick end
    local ready = look(w, solo and 0 or block)
    if #ready > 0 then return ready end
    if deadline and core.time() >= deadline then return ready end
    if solo and solo._state ~= "done" then
      solo:poll(math.min(left or 1, 1))       -- blocks in Redis (BLPOP)
    elseif ticking then
      tick = math.min(tick * 2, TICK_MAX)
    end
  end
end

--- as_completed(list [, timeout]) -> iterator over the objects of list
-- (AsyncResults above all, or anything wait takes), each once, as it
-- becomes ready; those ready already come first. Raises a `timeout`
-- error when timeout seconds (counted from this call) pass before all
-- are done (like concurrent.futures.as_completed).
function M.as_completed(list, timeout)
  check_args("as_completed", list, timeout)
  classify(list, "as_completed")             -- argument errors now
  local pending, seen = {}, {}
  for _, x in ipairs(list) do
    if not seen[x] then
      seen[x] = true
      pending[#pending + 1] = x
    end
  end
  local total = #pending
  local deadline = timeout and core.time() + timeout
  local batch, bi = {}, 1
  return function()
    while true do
      if batch[bi] then
        bi = bi + 1
        return batch[bi - 1]
      end
      if #pending == 0 then return nil end
      local left = deadline and math.max(0, deadline - core.time())
      batch, bi = M.wait(pending, left), 1
      if #batch == 0 then
        error(core.error("timeout", string.format("%d (of %d) results unfinished",
          #pending, total)), 2)
      end
      local done = {}
      for _, x in ipairs(batch) do done[x] = true end
      local rest = {}
      for _, x in ipairs(pending) do if not done[x] then rest[#rest + 1] = x end end
      pending = rest
    end
  end
end

return M
