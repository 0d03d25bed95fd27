--- Helpers for the prefork specs: start examples/prefork_server.lua in the
-- background (recording its pid and exit status), stop it, and the client
-- load script run under the lmp runtime.
local H = require "helper"
local sys = require "lmp.c.sys"
local P = {}

function P.slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

--- Starts the example server on port with n children. Returns
-- {pid=, err_path=, code_path=}; the exit status lands in code_path.
function P.start_server(port, n)
  local s = {pid_path = os.tmpname(), err_path = os.tmpname(), code_path = os.tmpname()}
  os.remove(s.code_path)
  local cmd = string.format(
    "(%s %s/examples/prefork_server.lua %d %d </dev/null >/dev/null 2>%s & "
    .. "echo $! > %s; wait $!; echo $? > %s) >/dev/null 2>&1 </dev/null &",
    H.shell_quote(H.lmp_bin), H.shell_quote(H.root), port, n,
    s.err_path, s.pid_path, s.code_path)
  os.execute(cmd)
  s.pid = H.wait_until(function() return tonumber(P.slurp(s.pid_path):match("%d+")) end, 10)
  assert(s.pid, "the server did not start")
  return s
end

--- Exit status of the server once it ended, else nil.
function P.exit_code(s)
  return tonumber(P.slurp(s.code_path):match("%d+"))
end

--- Kills whatever is left of the server (for finally).
function P.kill_server(s)
  if not s or not s.pid or P.exit_code(s) then return end
  for _, kid in ipairs(H.children(s.pid)) do sys.kill(kid, sys.SIGKILL) end
  sys.kill(s.pid, sys.SIGKILL)
end

--- One HTTP/1.0 GET with the lmp.socket client: status line and body.
function P.get(port, path, timeout)
  local S = require "lmp.socket"
  local c = S.connect("127.0.0.1", port, timeout)
  c:write("GET " .. path .. " HTTP/1.0\r\n\r\n", timeout)
  local status = c:read("l", timeout)
  local len
  repeat
    local h = c:read("l", timeout)
    len = h and tonumber(h:match("^Content%-Length: (%d+)$")) or len
  until h == nil or h == ""
  local body = len and c:read(len, timeout)
  c:close()
  return status, body
end

--- Client load (run under lmp, arg[1] = port): NC forked clients share
-- TOTAL requests; a request whose connection failed is retried; client 0
-- SIGKILLs the child that served its KILL_AT-th request. Prints
-- "client=C ok=N bad=N retries=N", "seen TASK PID" and "killed TASK PID".
P.CLIENTS = [[
local H = require "helpers.prefork"
local sys = require "lmp.c.sys"
local port = tonumber(arg[1])
local NC, TOTAL, KILL_AT = 16, 1000, 20
local procs = {}
for c = 0, NC - 1 do
  local share = math.floor(TOTAL / NC) + (c < TOTAL % NC and 1 or 0)
  procs[#procs + 1] = lmp.Process{target = function()
    local good, bad, retries, seen, out = 0, 0, 0, {}, {}
    for i = 1, share do
      local path = string.format("/c%d/r%d", c, i)
      local status, body
      for _ = 1, 50 do
        local ok
        ok, status, body = pcall(H.get, port, path, 5)
        if ok and status and body then break end
        retries = retries + 1
        status, body = nil, nil
      end
      local task, pid, p = (body or ""):match("^task=(%d+) pid=(%d+) path=(%S+)\n$")
      if status == "HTTP/1.0 200 OK" and p == path then
        good = good + 1
        seen[task .. " " .. pid] = true
        if c == 0 and i == KILL_AT then
          sys.kill(tonumber(pid), sys.SIGKILL)
          out[#out + 1] = "killed " .. task .. " " .. pid
        end
      else
        bad = bad + 1
      end
    end
    out[#out + 1] = string.format("client=%d ok=%d bad=%d retries=%d", c, good, bad, retries)
    for k in pairs(seen) do out[#out + 1] = "seen " .. k end
    io.stdout:write(table.concat(out, "\n") .. "\n")   -- one write
    io.stdout:flush()
  end}
  procs[#procs]:start()
end
for _, p in ipairs(procs) do assert(p:join(60), "a client hung") end
]]

return P
