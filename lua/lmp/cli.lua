--- lmp.cli: the runtime's subcommands.
--
--   lmp worker --redis URL --queue NAME [--concurrency N] [--max-tasks K]
--              [--prefetch P] [--authkey-file FILE]... [--insecure] [--quiet]
--              [script.lua]
--   lmp workers --redis URL --queue NAME [--authkey-file FILE]...
--
-- The runtime calls main(cmd, arg) with arg[0] = the subcommand and the
-- options from arg[1]; main returns the exit status.
local M = {}

local USAGE = {
  worker = [[
usage: lmp worker --redis URL --queue NAME [options] [script.lua]
  --redis URL         redis://[:password@]host:port/db (or unix:///path)
  --queue NAME        the queue to serve
  --concurrency N     worker processes (default: the number of CPUs)
  --max-tasks K       exit after K tasks
  --prefetch P        tasks held at once (default 2 * concurrency)
  --timeout S         Redis command timeout in seconds (default 5)
  --authkey-file FILE the queue's authkey (32+ bytes; one trailing newline is
                      dropped): tasks must be signed with it, results are
                      signed. Repeat it to rotate keys: the first signs, all
                      are accepted. Default: $LMP_AUTHKEY_FILE (FILE[:FILE...])
  --insecure          run without an authkey on a Redis that is not on
                      loopback or a Unix socket (anyone who can write to it
                      can then run code here)
  --quiet             no log lines on stderr
  script.lua          loaded in every worker process before tasks run
SIGTERM (or one Ctrl-C) finishes the tasks in hand and exits; a second
Ctrl-C exits at once (its tasks are redelivered after the visibility timeout).]],
  workers = [[
usage: lmp workers --redis URL --queue NAME [--authkey-file FILE]... [--insecure]
Lists the live workers of the queue, its depth, pending and dead-letter counts.
The listing decodes no task, so it needs no key; a key given is checked all
the same (a missing or short key file is an error).]],
}

local function parse(cmd, arg)
  local o, i = {}, 1
  local function value(name)
    i = i + 1
    local v = arg[i]
    if v == nil then error({usage = "option " .. name .. " needs a value"}) end
    return v
  end
  local function int(name)
    local v = tonumber(value(name))
    if not v or v < 1 or v % 1 ~= 0 then error({usage = name .. " must be an integer >= 1"}) end
    return math.floor(v)
  end
  while arg[i] ~= nil do
    local a = arg[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if name then a = name table.insert(arg, i + 1, inline) end
    if a == "--redis" then o.url = value(a)
    elseif a == "--queue" then o.queue = value(a)
    elseif a == "--concurrency" and cmd == "worker" then o.concurrency = int(a)
    elseif a == "--max-tasks" and cmd == "worker" then o.max_tasks = int(a)
    elseif a == "--prefetch" and cmd == "worker" then o.prefetch = int(a)
    elseif a == "--timeout" then
      o.timeout = tonumber(value(a))
      if not o.timeout or o.timeout <= 0 then error({usage = "--timeout must be > 0"}) end
    elseif a == "--authkey-file" then
      o.authkey_file = o.authkey_file or {}
      o.authkey_file[#o.authkey_file + 1] = value(a)
    elseif a == "--insecure" then o.insecure = true
    elseif a == "--quiet" then o.quiet = true
    elseif a == "-h" or a == "--help" then error({help = true})
    elseif a:sub(1, 1) ~= "-" and cmd == "worker" and not o.script then o.script = a
    else error({usage = "unknown argument " .. a}) end
    i = i + 1
  end
  if not o.url then error({usage = "--redis URL is required"}) end
  if not o.queue then error({usage = "--queue NAME is required"}) end
  return o
end

local function workers(o)
  local RM = require "lmp.redis"
  local cl = RM.client(o.url, {timeout = o.timeout or 5, reconnect_timeout = 0})
  local s = RM.stats(cl, o.queue)
  cl:close()
  print(string.format("queue %s: %d waiting, %d pending (in workers' hands), %d dead-lettered",
    o.queue, s.waiting, s.pending, s.dead))
  print(string.format("%d live worker(s)", #s.workers))
  for _, w in ipairs(s.workers) do
    print(string.format("  %s  host=%s pid=%s concurrency=%s processed=%s inflight=%s",
      w.name, tostring(w.host), tostring(w.pid), tostring(w.concurrency),
      tostring(w.processed), tostring(w.inflight)))
  end
  return 0
end

local function worker(o)
  if o.script then
    local f, err = loadfile(o.script)
    if not f then
      io.stderr:write("lmp worker: cannot load ", o.script, ": ", tostring(err), "\n")
      return 1
    end
    if o.script:sub(1, 1) ~= "/" then
      local p = io.popen("pwd")
      o.script = p:read("*l") .. "/" .. o.script
      p:close()
    end
  end
  return require("lmp.redis_worker").run(o)
end

--- main(cmd, arg) -> exit status.
function M.main(cmd, arg)
  local args = {}
  for i = 1, #arg do args[i] = arg[i] end
  local ok, o = pcall(parse, cmd, args)
  if not ok then
    if type(o) == "table" and o.help then print(USAGE[cmd]) return 0 end
    if type(o) == "table" and o.usage then
      io.stderr:write("lmp ", cmd, ": ", o.usage, "\n", USAGE[cmd], "\n")
      return 2
    end
    error(o, 0)
  end
  local okk, kerr = pcall(require("lmp.redis_auth").keyring, nil, o.authkey_file)
  if not okk then
    io.stderr:write("lmp ", cmd, ": ", tostring(kerr), "\n")
    return 2
  end
  local core = require "lmp.core"
  local okr, rc = pcall(cmd == "workers" and workers or worker, o)
  if okr then return rc end
  -- a connection failure is the user's to fix: its message, no traceback
  for _, kind in ipairs({"os", "auth", "timeout", "broken"}) do
    if core.is_error(rc, kind) then
      io.stderr:write("lmp ", cmd, ": ", rc.kind, ": ", tostring(rc.message), "\n")
      return 1
    end
  end
  error(rc, 0)
end

return M
