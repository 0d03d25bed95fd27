--- Helpers for the specs of lmp.sync, lmp.queue and lmp.shm: run a script
-- in a separate lmp process and read back the "key=value" lines it prints.
local H = require "helper"
local S = {}

S.methods = {"fork", "spawn"}

--- Runs code (with `lmp`, `ctx` = get_context(method) and `out(k, v)`
-- predefined) under the lmp runtime; returns the table of printed
-- values plus the raw result. Raises with the output when it failed.
function S.run(code, method, timeout)
  local prelude = string.format([[
local lmp = require "lmp"
local ctx = lmp.get_context(%q)
local function out(k, v) io.write(k, "=", tostring(v), "\n") io.stdout:flush() end
]], method or "fork")
  local r = H.run_lmp(prelude .. code, {timeout = timeout or 30})
  local t = {}
  for k, v in r.out:gmatch("([%w_]+)=([^\n]*)") do t[k] = v end
  if r.code ~= 0 and not t.allow_fail then
    error(("lmp exited %s\nstdout: %s\nstderr: %s"):format(tostring(r.code), r.out, r.err), 2)
  end
  return t, r
end

--- Number of lmp shared-memory names in /dev/shm created by pid.
function S.shm_names(pid)
  local p = io.popen("ls /dev/shm 2>/dev/null")
  local n = 0
  for name in p:read("*a"):gmatch("[^\n]+") do
    if name:match("^lmp%." .. pid .. "%.") then n = n + 1 end
  end
  p:close()
  return n
end

return S
