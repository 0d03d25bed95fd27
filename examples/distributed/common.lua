-- Shared by master.lua and worker.lua: the authkey comes from the
-- environment (LMP_AUTHKEY) or a file (LMP_AUTHKEY_FILE), never from the
-- command line, where `ps` would show it to every user of the machine.
local C = {}

function C.authkey()
  local key = os.getenv("LMP_AUTHKEY")
  local path = os.getenv("LMP_AUTHKEY_FILE")
  if (not key or key == "") and path then
    local f = assert(io.open(path, "rb"))
    key = f:read("*a"):gsub("%s+$", "")
    f:close()
  end
  if not key or key == "" then
    io.stderr:write("set LMP_AUTHKEY or LMP_AUTHKEY_FILE to the cluster's secret\n")
    os.exit(2)
  end
  return key
end

-- The names the master serves; a worker registers the same names.
C.NAMES = {"get_task_queue", "get_result_queue", "get_done"}

return C
