--- A tiny HTTP/1.0 server served by prefork children (Tornado's model).
--
--   lmp examples/prefork_server.lua PORT [CHILDREN=4] [HOST=127.0.0.1]
--   curl http://127.0.0.1:PORT/hello   -->  task=2 pid=4242 path=/hello
--
-- The listening socket is bound once, before forking; every child accepts
-- on it. The parent supervises: a child that dies is restarted with the
-- same task id; SIGTERM (or Ctrl-C) stops the children and the server.
-- Each child logs with its task id (lmp.log: one write per line).
local lmp = require "lmp"

local port = tonumber(arg[1]) or 8080
local children = tonumber(arg[2]) or 4
local host = arg[3] or "127.0.0.1"

local sock = lmp.bind_socket{host = host, port = port, backlog = 1024}
lmp.log.info("listening on %s:%d with %d children", sock.host, sock.port, children)

local id = lmp.fork_processes(children)
-- only the children get here
local pid = lmp.current_process().pid
lmp.log.info("task %d serving (pid %d)", id, pid)

local function respond(c, status, body)
  c:write(string.format("HTTP/1.0 %s\r\nContent-Type: text/plain\r\n"
    .. "Content-Length: %d\r\nConnection: close\r\n\r\n%s", status, #body, body), 5)
end

local function handle(c)
  local line = c:read("l", 5)
  if not line then return end
  local method, path = line:match("^(%u+) (%S+) HTTP/%d%.%d$")
  repeat local h = c:read("l", 5) until h == nil or h == ""   -- headers
  if method == "GET" then
    respond(c, "200 OK", string.format("task=%d pid=%d path=%s\n", id, pid, path))
  else
    respond(c, "400 Bad Request", "bad request\n")
  end
end

while true do
  local c = sock:accept()
  local ok, err = pcall(handle, c)
  -- a client that vanished or stalled costs only its own connection
  if not ok and not (lmp.is_error(err, "broken") or lmp.is_error(err, "timeout")) then
    lmp.log.error("request failed: %s", tostring(err))
  end
  c:close()
end
