--- lmp.socket: listening sockets for prefork servers, and a client helper.
--
--   local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}   -- ls.port
--   local n = lmp.fork_processes(4)
--   while true do
--     local c = ls:accept()            -- lmp.Stream
--     local line = c:read("l", 5)      -- n | "l" | "L" | "a", timeout
--     c:write(line .. "\n", 5)
--     c:close()
--   end
--
-- The objects are the C ones of lmp.c.socket (lmp.Socket, lmp.Stream);
-- docs/api/socket.md describes them.
require "lmp.core"                    -- registers lmp.c.*
local C = require "lmp.c.socket"

local M = {}

local function argerror(fn, msg)
  error("bad argument #1 to '" .. fn .. "' (" .. msg .. ")", 3)
end

local function check_opts(fn, o, allowed)
  if type(o) ~= "table" then argerror(fn, "table expected") end
  for k in pairs(o) do
    if not allowed[k] then argerror(fn, "unknown option '" .. tostring(k) .. "'") end
  end
end

local bind_opts = {host = true, port = true, backlog = true, reuseport = true,
                   path = true}

--- bind_socket{host=, port=, backlog=128, reuseport=false} -> lmp.Socket
-- or bind_socket{path = "/tmp/x.sock"} for a Unix socket. host nil or ""
-- listens on every address ("::" on IPv6 and IPv4); port 0 picks a free
-- port (read it back from sock.port). SO_REUSEADDR always, SO_REUSEPORT
-- when asked; close-on-exec and non-blocking.
function M.bind_socket(o)
  check_opts("bind_socket", o, bind_opts)
  if o.path ~= nil then
    if type(o.path) ~= "string" then argerror("bind_socket", "path must be a string") end
    if o.host ~= nil or o.port ~= nil then
      argerror("bind_socket", "path excludes host and port")
    end
    return C.listen_unix(o.path, o.backlog)
  end
  if o.host ~= nil and type(o.host) ~= "string" then
    argerror("bind_socket", "host must be a string")
  end
  if type(o.port) ~= "number" then argerror("bind_socket", "port must be a number") end
  return C.listen(o.host, o.port, o.backlog, o.reuseport)
end

--- connect(host, port [, timeout]) -> lmp.Stream (TCP, TCP_NODELAY), or
-- connect{host=, port=, timeout=} / connect{path=, timeout=} (Unix).
function M.connect(host, port, timeout)
  if type(host) == "table" then
    local o = host
    check_opts("connect", o, {host = true, port = true, path = true, timeout = true})
    if o.path then return C.connect_unix(o.path, o.timeout) end
    host, port, timeout = o.host, o.port, o.timeout
  end
  if type(host) ~= "string" then argerror("connect", "host must be a string") end
  return C.connect(host, port, timeout)
end

return M
