--- Shared helpers for the busted specs. Every wait here is bounded.
-- Concept-specific helpers belong in spec/helpers/<concept>.lua.
local H = {}

H.root = os.getenv("LMP_ROOT") or "."
H.lmp_bin = os.getenv("LMP_BIN") or (H.root .. "/lmp")
H.lua_version = os.getenv("LMP_LUA") or "5.4"
H.is_luajit = type(jit) == "table"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.shell_quote = shell_quote

--- Polls pred() until it returns a truthy value or `timeout` seconds pass.
-- Returns pred's value, or nil after the timeout. Never sleeps blindly:
-- the interval only bounds how often pred is asked.
function H.wait_until(pred, timeout, interval)
  local lmp = require "lmp"
  local deadline = lmp.time() + (timeout or 5)
  interval = interval or 0.005
  repeat
    local v = pred()
    if v then return v end
    lmp.sleep(interval)
  until lmp.time() > deadline
  return pred() or nil
end

-- Runs a shell command line; returns {out=, err=, code=}.
function H.sh(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local ok, _, status = os.execute("(" .. cmd .. ") >" .. out .. " 2>" .. err .. " </dev/null")
  local rc
  if type(ok) == "number" then rc = ok / 256 else rc = status end
  local function slurp(p)
    local f = io.open(p)
    local s = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(p)
    return s
  end
  return {out = slurp(out), err = slurp(err), code = rc}
end

--- Writes `code` to a temporary script and runs it with the lmp runtime
-- under `timeout` seconds (default 30). Returns {out=, err=, code=}; code
-- is the exit status (124 when the time ran out).
function H.run_lmp(code, opts)
  opts = opts or {}
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(code)
  f:close()
  local args = opts.args and table.concat(opts.args, " ") or ""
  local r = H.sh(string.format("%s timeout -k 2 %d %s %s %s", opts.env or "",
    opts.timeout or 30, shell_quote(opts.bin or H.lmp_bin), shell_quote(script), args))
  os.remove(script)
  return r
end

-- This process's open fds as "fd -> target" lines, sorted, without
-- either end of the pipe the listing is read through (popen closes the
-- child's end in the parent only after the child starts, so a count that
-- subtracts one is off by one now and then).
function H.list_fds()
  local p = io.popen("readlink /proc/$$/fd/1; ls -l /proc/" .. H.getpid() .. "/fd 2>/dev/null")
  local out = p:read("*a")
  p:close()
  local own = out:match("^([^\n]*)\n")
  local fds = {}
  for fd, target in out:gmatch("(%d+) %-> ([^\n]*)") do
    if target ~= own then fds[#fds + 1] = fd .. " -> " .. target end
  end
  table.sort(fds)
  return fds
end

function H.count_fds()
  return #H.list_fds()
end

function H.getpid()
  local f = io.open("/proc/self/stat")
  -- /proc/self is the reader (this process), its first field is the pid
  local pid = tonumber(f:read("*a"):match("^(%d+)"))
  f:close()
  return pid
end

--- Pids of this process's children (zombies included), from /proc.
function H.children(pid)
  pid = pid or H.getpid()
  local kids = {}
  local p = io.popen("cat /proc/" .. pid .. "/task/*/children 2>/dev/null")
  for k in p:read("*a"):gmatch("%d+") do kids[#kids + 1] = tonumber(k) end
  p:close()
  return kids
end

--- State letter of a process (R, S, Z, ...) or nil if it is gone.
function H.proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s:match("%) (%a)")
end

--- A TCP port free on 127.0.0.1 at the time of the call.
function H.free_port()
  local p = io.popen([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])
  local port = tonumber(p:read("*a"))
  p:close()
  return port
end

--- Deep equality that treats NaN as equal to NaN and compares the
-- identity structure of shared tables (a -> b mapping must be 1:1).
function H.deep_equal(a, b, seen)
  seen = seen or {}
  if a ~= a and b ~= b then return true end        -- NaN
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type and math.type(a) ~= math.type(b) then return false end
    if a == 0 and b == 0 then return 1 / a == 1 / b end   -- -0.0
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  if seen[a] then return seen[a] == b end
  seen[a] = b
  if not H.deep_equal(getmetatable(a), getmetatable(b), seen) then return false end
  for k, v in pairs(a) do
    local bk = k
    if type(k) == "table" then
      bk = nil
      for k2 in pairs(b) do
        if seen[k] == k2 or (seen[k] == nil and type(k2) == "table"
            and H.deep_equal(k, k2, seen)) then bk = k2 break end
      end
      if bk == nil then return false end
    end
    if not H.deep_equal(v, rawget(b, bk), seen) then return false end
  end
  for k in pairs(b) do
    if type(k) ~= "table" and rawget(a, k) == nil then return false end
  end
  return true
end
-- Interpreted under LuaJIT: Debian 12's LuaJIT (2.1.0-beta3, git
-- 2022-03-20) sometimes compiles the nested pairs loops above into a
-- trace that truncates lj_vm_next's result to 32 bits ("xchg eax, edx")
-- and crashes: LuaJIT issue #829, fixed upstream on 2022-04-05. Seen
-- once in ~40 runs of 20,000 round trips, always in this function.
if jit and jit.off then jit.off(H.deep_equal) end

-- {1, ..., n}
function H.range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- The error f(...) raises (fails the spec if it returns).
function H.err_of(f, ...)
  local ok, e = pcall(f, ...)
  if ok then error("expected an error", 2) end
  return e
end

return H
