--- lmp.metrics: Prometheus's text exposition format (version 0.0.4) and
-- a tiny HTTP server that answers GET /metrics from its host's own loop.
--
--   local h = M.histogram()                 -- h:observe(seconds)
--   local text = M.format{                  -- families, in order
--     {name = "x_total", type = "counter", help = "...", labels = M.labels{q = "a"}, value = 3},
--     {name = "y_seconds", type = "histogram", help = "...", labels = ..., hist = h},
--   }
--   local srv = M.serve{host = "127.0.0.1", port = 9100, collect = function() return text end}
--   -- in the loop: srv:add_fds(fds); local ready = R.wait(fds, t); srv:step(ready, now)
--
-- The server never blocks its host: every socket is non-blocking, each
-- client sends one small request (at most MAX_REQUEST bytes, within
-- CLIENT_TIME seconds) and is closed after the response; at most
-- MAX_CLIENTS are open at once (more are closed at once).
local core = require "lmp.core"       -- also registers lmp.c.*
local C = require "lmp.c.socket"

local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
M.BUCKETS = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
local MAX_CLIENTS, MAX_REQUEST, CLIENT_TIME = 16, 8192, 2

---------------------------------------------------------------- exposition

--- number(v) -> text: integers without a fraction, +Inf, -Inf, NaN.
local function number(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v % 1 == 0 and v > -2^53 and v < 2^53 then return string.format("%d", v) end
  return string.format("%.10g", v)
end
M.number = number

--- labels{k = v, ...} -> 'k="v",...' sorted by name (values escaped).
function M.labels(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = k end
  table.sort(names)
  for i, k in ipairs(names) do
    local v = tostring(t[k]):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"')
    names[i] = string.format('%s="%s"', k, v)
  end
  return table.concat(names, ",")
end

local Histogram = {}
Histogram.__index = Histogram

--- histogram([bounds]) -> h: counts per bucket (upper bounds ascending,
-- +Inf implied), sum and count. observe(v) allocates nothing.
function M.histogram(bounds)
  bounds = bounds or M.BUCKETS
  local counts = {}
  for i = 1, #bounds + 1 do counts[i] = 0 end
  return setmetatable({bounds = bounds, counts = counts, sum = 0, n = 0}, Histogram)
end

function Histogram:observe(v)
  local b, i = self.bounds, 1
  while b[i] and v > b[i] do i = i + 1 end
  self.counts[i] = self.counts[i] + 1
  self.sum = self.sum + v
  self.n = self.n + 1
end

local function sample(out, name, labels, v)
  if labels and labels ~= "" then
    out[#out + 1] = string.format("%s{%s} %s", name, labels, number(v))
  else
    out[#out + 1] = name .. " " .. number(v)
  end
end

local function histogram_lines(out, f)
  local h, lab = f.hist, f.labels or ""
  local sep = lab ~= "" and "," or ""
  local cum = 0
  for i = 1, #h.bounds + 1 do
    cum = cum + h.counts[i]
    local le = h.bounds[i] and number(h.bounds[i]) or "+Inf"
    out[#out + 1] = string.format('%s_bucket{%s%sle="%s"} %s', f.name, lab, sep, le, number(cum))
  end
  sample(out, f.name .. "_sum", lab, h.sum)
  sample(out, f.name .. "_count", lab, h.n)
end

--- format(families) -> the exposition text (each family: name, type
-- "counter" | "gauge" | "histogram", help, labels (M.labels' text) and
-- value, or hist for a histogram, or samples = {{labels =, value =}, ...}).
function M.format(families)
  local out = {}
  for _, f in ipairs(families) do
    out[#out + 1] = "# HELP " .. f.name .. " " .. f.help:gsub("\\", "\\\\"):gsub("\n", "\\n")
    out[#out + 1] = "# TYPE " .. f.name .. " " .. f.type
    if f.hist then histogram_lines(out, f)
    elseif f.samples then
      for _, s in ipairs(f.samples) do sample(out, f.name, s.labels, s.value) end
    else sample(out, f.name, f.labels, f.value) end
  end
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- process_families() -> process_cpu_seconds_total (utime + stime of
-- /proc/self/stat at USER_HZ = 100, Linux's fixed unit there; os.clock()
-- without /proc) and process_resident_memory_bytes (VmRSS of
-- /proc/self/status; omitted without /proc). This process only: not its
-- children (a worker's pool processes have pids of their own).
function M.process_families()
  local cpu
  local st = read_file("/proc/self/stat")
  local rest = st and st:match("%)%s+(.*)$")   -- after "(comm)", which may hold spaces
  if rest then
    local f, i = {}, 3                           -- rest starts at field 3 (state)
    for w in rest:gmatch("%S+") do f[i] = w i = i + 1 if i > 15 then break end end
    cpu = (tonumber(f[14]) + tonumber(f[15])) / 100
  end
  local fams = {{name = "process_cpu_seconds_total", type = "counter",
    help = "User and system CPU time spent by this process, in seconds.",
    value = cpu or os.clock()}}
  local rss = tonumber((read_file("/proc/self/status") or ""):match("VmRSS:%s*(%d+) kB"))
  if rss then
    fams[2] = {name = "process_resident_memory_bytes", type = "gauge",
      help = "Resident memory size of this process, in bytes.", value = rss * 1024}
  end
  return fams
end

---------------------------------------------------------------- address

--- parse_address(s) -> host, port. "PORT" and ":PORT" bind loopback
-- (127.0.0.1); "HOST:PORT" and "[V6]:PORT" bind HOST. Raises a message.
function M.parse_address(s)
  if type(s) ~= "string" then error("address must be a string", 2) end
  local host, port = s:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]*):(%d+)$") end
  if not host then host, port = "", s:match("^(%d+)$") end
  port = tonumber(port)
  if not port or port > 65535 then
    error("bad address '" .. s .. "' (expected PORT, :PORT or HOST:PORT)", 2)
  end
  if host == "" then host = "127.0.0.1" end
  return host, port
end

---------------------------------------------------------------- server

local Server = {}
Server.__index = Server

-- A pcall here must not swallow Ctrl-C / SIGTERM: the host drains on it.
local function check(ok, e)
  if not ok and core.is_error(e, "interrupted") then error(e, 0) end
  return ok, e
end

local STATUS = {[200] = "OK", [400] = "Bad Request", [404] = "Not Found",
  [500] = "Internal Server Error"}

local function response(code, body, ctype)
  return string.format("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
    .. "Connection: close\r\n\r\n%s", code, STATUS[code], ctype or "text/plain; charset=utf-8",
    #body, body)
end

--- serve{host =, port =, collect = fn() -> text} -> server (server.host,
-- server.port: the bound address; port 0 picks a free one).
function M.serve(o)
  local ls = C.listen(o.host or "127.0.0.1", o.port, 64)
  return setmetatable({ls = ls, lfd = ls:fileno(), host = ls.host, port = ls.port,
    collect = o.collect, clients = {}, base = 0, served = 0}, Server)
end

--- add_fds(fds): appends the listening socket and the clients' sockets
-- to a list for R.wait; step() reads the ready indices against it.
function Server:add_fds(fds)
  local n = #fds
  self.base = n + 1
  fds[n + 1] = self.lfd
  for i, c in ipairs(self.clients) do fds[n + 1 + i] = c.fd end
  self.nfds = #self.clients
end

--- timeout(now) -> seconds until the next client's deadline (or nil).
function Server:timeout(now)
  local t
  for _, c in ipairs(self.clients) do
    if not t or c.deadline - now < t then t = c.deadline - now end
  end
  return t and math.max(0, t)
end

function Server:_finish(c, code, body, ctype)
  if code then check(pcall(c.s.write, c.s, response(code, body, ctype), 0)) end
  c.s:close()
  c.closed = true
end

-- The request line of a complete head: 200 for GET /metrics, 404 for any
-- other well-formed request, 400 for anything else.
function Server:_answer(c, head)
  local method, target = head:match("^(%u+) (%S+) HTTP/1%.[01]\r?\n")
  if not method then return self:_finish(c, 400, "bad request\n") end
  if method == "GET" and target:match("^[^?]*") == "/metrics" then
    local ok, text = check(pcall(self.collect))
    if not ok then return self:_finish(c, 500, "") end
    self.served = self.served + 1
    return self:_finish(c, 200, text, M.CONTENT_TYPE)
  end
  return self:_finish(c, 404, "not found\n")
end

function Server:_read(c)
  local ok, data = check(pcall(c.s.read, c.s, "a", 0))
  if not ok then
    if type(data) == "table" and data.kind == "timeout" then return end   -- nothing yet
    return self:_finish(c)
  end
  if data == nil then return self:_finish(c) end                        -- the peer left
  c.buf = c.buf .. data
  local head = c.buf:match("^(.-\r?\n)\r?\n")
  if head then return self:_answer(c, head) end
  if #c.buf > MAX_REQUEST then return self:_finish(c, 400, "request too large\n") end
end

function Server:_accept(now)
  for _ = 1, MAX_CLIENTS do
    local ok, s = check(pcall(self.ls.accept, self.ls, 0))
    if not ok then return end
    if #self.clients >= MAX_CLIENTS then s:close()      -- busy: the scraper retries
    else
      self.clients[#self.clients + 1] = {s = s, fd = s:fileno(), buf = "",
        deadline = now + CLIENT_TIME}
    end
  end
end

--- step(ready, now): serves what R.wait found ready (indices into the
-- list add_fds filled) and closes clients past their deadline.
function Server:step(ready, now)
  local cl, base, n = self.clients, self.base, self.nfds or 0
  local listen = false
  for _, i in ipairs(ready) do
    if i == base then listen = true
    elseif i > base and i <= base + n then
      local c = cl[i - base]
      if c and not c.closed then self:_read(c) end
    end
  end
  if listen then self:_accept(now) end
  if #cl == 0 then return end
  local keep = {}
  for _, c in ipairs(cl) do
    if not c.closed and now >= c.deadline then self:_finish(c) end   -- slow: dropped
    if not c.closed then keep[#keep + 1] = c end
  end
  self.clients = keep
  self.nfds = 0                 -- the indices of add_fds no longer hold
end

function Server:close()
  for _, c in ipairs(self.clients) do if not c.closed then c.s:close() end end
  self.clients = {}
  self.ls:close()
end

return M
