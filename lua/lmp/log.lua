--- lmp.log: logging that stays readable with many processes.
--
--   local log = lmp.log
--   log.set_level("debug")
--   log.info("serving on port %d", port)
--   -- 2024-05-01 12:00:00.123 INFO [Task-2 pid=4242 task=2] serving on port 8080
--   log.to_file("/var/log/app-{task}.log")      -- or one shared file
--
-- Each record is formatted whole and written with ONE write(2): records
-- from several processes never interleave mid-line (atomic for O_APPEND
-- files, and for pipes up to PIPE_BUF = 4096 bytes). A file opened with
-- to_file is reopened by each forked child on its first record, so every
-- process owns its handle (and "{pid}"/"{task}" in the path can give each
-- its own file: Tornado's advice, made easy).
require "lmp.core"
local sys = require "lmp.c.sys"

local M = {}

local LEVELS = {debug = 10, info = 20, warning = 30, error = 40, critical = 50}
local NAMES = {[10] = "DEBUG", [20] = "INFO", [30] = "WARNING", [40] = "ERROR",
               [50] = "CRITICAL"}
M.levels = LEVELS

M.DEFAULT_FORMAT = "{time} {level} [{name} pid={pid} task={task}] {msg}"

local st = {
  level = 20,
  format = M.DEFAULT_FORMAT,
  fd = 2,               -- where records go
  path = nil,           -- to_file's path pattern
  opened_by = nil,      -- pid that opened fd (for path)
  last_progress = 0,    -- time of the last progress line written
}

local function check_level(l, fn)
  if type(l) == "number" and l == math.floor(l) then return l end
  local n = type(l) == "string" and LEVELS[l:lower()]
  if not n then
    error("bad argument #1 to '" .. fn .. "' (debug, info, warning, error, "
      .. "critical or a number expected)", 3)
  end
  return n
end

--- set_level(l): "debug" | "info" | "warning" | "error" | "critical" | n.
function M.set_level(l) st.level = check_level(l, "set_level") end
function M.get_level() return NAMES[st.level] and NAMES[st.level]:lower() or st.level end

--- set_format(fmt): fields {time} {level} {name} {pid} {task} {msg}.
function M.set_format(fmt)
  if type(fmt) ~= "string" then error("bad argument #1 to 'set_format' (string expected)", 2) end
  st.format = fmt
end

---------------------------------------------------------------- identity

local function identity()
  local P = package.loaded["lmp.process"]
  local name = P and P.current_process().name or "MainProcess"
  local pre = package.loaded["lmp.prefork"]
  local task = pre and pre.task_id() or nil
  return name, sys.getpid(), task
end

local function expand(pattern, fields)
  return (pattern:gsub("{(%a+)}", function(k)
    local v = fields[k]
    if v == nil then return nil end
    return tostring(v)
  end))
end

local function timestamp(t)
  local sec = math.floor(t)
  local ms = math.floor((t - sec) * 1000)
  return os.date("%Y-%m-%d %H:%M:%S", sec) .. string.format(".%03d", ms)
end

---------------------------------------------------------------- destinations

local function close_file()
  if st.path and st.fd > 2 then sys.close(st.fd) end
end

local function open_file(path)
  local name, pid, task = identity()
  local fd = sys.open_append(expand(path, {pid = pid, task = task or "-",
                                           name = name}))
  close_file()
  st.fd, st.path, st.opened_by = fd, path, pid
end

--- to_file(path): records go to path (appended, created 0644). "{pid}",
-- "{task}" and "{name}" in path are filled in per process. Each forked
-- child reopens the file on its first record.
function M.to_file(path)
  if type(path) ~= "string" then error("bad argument #1 to 'to_file' (string expected)", 2) end
  open_file(path)
end

--- to_stderr(): records go to fd 2 (the default).
function M.to_stderr()
  close_file()
  st.fd, st.path, st.opened_by = 2, nil, nil
end

--- to_fd(fd): records go to an fd the caller owns (e.g. a pipe).
function M.to_fd(fd)
  if type(fd) ~= "number" or fd < 0 then error("bad argument #1 to 'to_fd' (fd expected)", 2) end
  close_file()
  st.fd, st.path, st.opened_by = fd, nil, nil
end

---------------------------------------------------------------- records

--- format_record(level, msg) -> the line (with "\n") that write would send.
function M.format_record(level, msg)
  local n = check_level(level, "format_record")
  local name, pid, task = identity()
  return expand(st.format, {
    time = timestamp(sys.realtime()), level = NAMES[n] or ("LEVEL" .. n),
    name = name, pid = pid, task = task or "-", msg = tostring(msg),
  }) .. "\n"
end

--- write(level, fmt, ...) -> true if the record was written, false if the
-- level filtered it out, or false and a message if the write failed.
-- fmt is a string.format pattern when arguments follow it.
function M.write(level, fmt, ...)
  local n = check_level(level, "write")
  if n < st.level then return false end
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  if st.path and st.opened_by ~= sys.getpid() then
    local ok, err = pcall(open_file, st.path)   -- a forked child: its own fd
    if not ok then return false, tostring(err) end
  end
  return sys.write(st.fd, M.format_record(n, msg))
end

for name, n in pairs(LEVELS) do
  M[name] = function(fmt, ...) return M.write(n, fmt, ...) end
end
M.warn = M.warning

---------------------------------------------------------------- progress

local function duration(s)
  if s ~= s or s == math.huge or s < 0 then return "?" end
  s = math.floor(s + 0.5)
  local h, m = math.floor(s / 3600), math.floor(s % 3600 / 60)
  if s >= 3600 then return string.format("%dh%02dm", h, m) end
  if s >= 60 then return string.format("%dm%02ds", m, s % 60) end
  return string.format("%ds", s)
end

--- format_progress(done, total, elapsed) -> "[#####     ] 50/100  50% 12.5/s ETA 4s"
function M.format_progress(done, total, elapsed)
  local frac = total > 0 and math.min(done / total, 1) or 1
  local width = 20
  local full = math.floor(frac * width + 1e-9)
  local rate = elapsed > 0 and done / elapsed or 0
  local eta = done >= total and 0 or (rate > 0 and (total - done) / rate or math.huge)
  return string.format("[%s%s] %d/%d %3d%% %.1f/s ETA %s",
    string.rep("#", full), string.rep(" ", width - full), done, total,
    math.floor(frac * 100), rate, duration(eta))
end

--- progress(done, total, start_time [, opts]) -> the progress line.
-- Writes it to stderr ("\r" first, "\n" once done == total) when stderr
-- is a terminal (or opts.force), at most 10 times a second except the
-- last. start_time is an lmp.time() value. opts.fd picks another fd.
function M.progress(done, total, start_time, opts)
  if type(done) ~= "number" or type(total) ~= "number" then
    error("bad argument to 'progress' (done and total must be numbers)", 2)
  end
  opts = opts or {}
  local core = require "lmp.core"
  local now = core.time()
  local line = M.format_progress(done, total, now - (start_time or now))
  local fd = opts.fd or 2
  local finished = done >= total
  if (opts.force or sys.isatty(fd)) and (finished or now - st.last_progress >= 0.1) then
    st.last_progress = now
    sys.write(fd, "\r" .. line .. (finished and "\n" or ""))
  end
  return line
end

return M
