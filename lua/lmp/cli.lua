--- lmp.cli: the runtime's subcommands.
--
--   lmp worker --redis URL --queue NAME [--concurrency N] [--max-tasks K]
--              [--prefetch P] [--cluster] [--shards K] [--authkey-file FILE]...
--              [--insecure] [--quiet] [--tls-ca FILE] [--tls-cert FILE]
--              [--tls-key FILE] [--tls-server-name NAME] [--tls-no-verify]
--              [--metrics ADDR] [--drain-timeout S] [script.lua]
--   lmp workers --redis URL --queue NAME [--cluster] [--shards K] [--authkey-file FILE]...
--               [--watch [SECONDS]] [--json]
--
-- The runtime calls main(cmd, arg) with arg[0] = the subcommand and the
-- options from arg[1]; main returns the exit status.
local M = {}

local USAGE = {
  worker = [[
usage: lmp worker --redis URL --queue NAME [options] [script.lua]
  --redis URL         redis://[:password@]host:port/db (or unix:///path);
                      rediss:// for TLS
  --queue NAME        the queue to serve
  --concurrency N     worker processes (default: the number of CPUs)
  --max-tasks K       exit after K tasks
  --prefetch P        tasks held at once (default 2 * concurrency)
  --timeout S         Redis command timeout in seconds (default 5)
  --tls-ca FILE       (rediss://) trust the CAs in FILE (PEM), not the system's
  --tls-cert FILE     client certificate (PEM), for a server that asks for one
  --tls-key FILE      its private key (default: in the --tls-cert file)
  --tls-server-name N the name the server's certificate must carry (default:
                      the URL's host; an IP address is checked as an address)
  --tls-no-verify     check no certificate at all (logged as a warning)
  --cluster           URL is a seed node of a Redis Cluster: commands go to
                      the node owning their key's slot (MOVED, ASK followed)
  --shards K          read K shards of the queue (default: the count its
                      callers set in lmp:{NAME}:cfg, else 1)
  --authkey-file FILE the queue's authkey (32+ bytes; one trailing newline is
                      dropped): tasks must be signed with it, results are
                      signed. Repeat it to rotate keys: the first signs, all
                      are accepted. Default: $LMP_AUTHKEY_FILE (FILE[:FILE...])
  --insecure          run without an authkey on a Redis that is not on
                      loopback or a Unix socket (anyone who can write to it
                      can then run code here)
  --quiet             no log lines on stderr
  --metrics ADDR      serve GET /metrics (Prometheus text format) on ADDR:
                      PORT or :PORT (127.0.0.1), HOST:PORT, [V6]:PORT
  --drain-timeout S   after SIGTERM, wait at most S seconds (default 30) for
                      the tasks in hand to finish and be committed
  script.lua          loaded in every worker process before tasks run
SIGTERM (or one Ctrl-C) finishes the tasks in hand and exits 0 (130 after
Ctrl-C); if that has not happened within --drain-timeout (a long task, or
Redis unreachable) it exits 75, and what it could not commit is redelivered
after the visibility timeout. A second Ctrl-C exits at once (status 130).]],
  workers = [=[
usage: lmp workers --redis URL --queue NAME [--cluster] [--shards K]
                   [--watch [SECONDS]] [--json] [--authkey-file FILE]... [--insecure]
                   [--tls-ca FILE] [--tls-cert FILE] [--tls-key FILE]
                   [--tls-server-name NAME] [--tls-no-verify]   (as for lmp worker)
  --watch [S]   redraw a live table every S seconds (default 2) until Ctrl-C:
                per worker host, pid, tasks/s, tasks in hand, tasks done and
                seconds since its last heartbeat
  --json        print the same data as JSON (once; with --watch, a line each)
Lists the live workers of the queue, its depth, pending and dead-letter counts
(summed over its shards, then each shard's; --shards K: default the count
the queue's callers set).
The listing decodes no task, so it needs no key; a key given is checked all
the same (a missing or short key file is an error).]=],
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
    elseif a == "--tls-ca" then o.tls = o.tls or {} o.tls.ca_file = value(a)
    elseif a == "--tls-cert" then o.tls = o.tls or {} o.tls.cert_file = value(a)
    elseif a == "--tls-key" then o.tls = o.tls or {} o.tls.key_file = value(a)
    elseif a == "--tls-server-name" then o.tls = o.tls or {} o.tls.server_name = value(a)
    elseif a == "--tls-no-verify" then o.tls = o.tls or {} o.tls.verify = false
    elseif a == "--cluster" then o.cluster = true
    elseif a == "--shards" then
      o.shards = int(a)
      if o.shards > 256 then error({usage = "--shards must be at most 256"}) end
    elseif a == "--quiet" then o.quiet = true
    elseif a == "--metrics" and cmd == "worker" then
      o.metrics = value(a)
      local okm, em = pcall(require("lmp.metrics").parse_address, o.metrics)
      if not okm then error({usage = "--metrics: " .. tostring(em)}) end
    elseif a == "--drain-timeout" and cmd == "worker" then
      o.drain_timeout = tonumber(value(a))
      if not o.drain_timeout or o.drain_timeout < 0 then
        error({usage = "--drain-timeout must be a number >= 0"})
      end
    elseif a == "--watch" and cmd == "workers" then
      o.watch = 2
      if tonumber(arg[i + 1]) then i = i + 1 o.watch = tonumber(arg[i]) end
      if o.watch < 0.05 then error({usage = "--watch must be at least 0.05 (seconds)"}) end
    elseif a == "--json" and cmd == "workers" then o.json = true
    elseif a == "-h" or a == "--help" then error({help = true})
    elseif a:sub(1, 1) ~= "-" and cmd == "worker" and not o.script then o.script = a
    else error({usage = "unknown argument " .. a}) end
    i = i + 1
  end
  if not o.url then error({usage = "--redis URL is required"}) end
  if not o.queue then error({usage = "--queue NAME is required"}) end
  local tls_err = require("lmp.c.redis").check_tls(o.url, o.tls)
  if tls_err then error({usage = "--tls-*: " .. tls_err}) end
  return o
end

local function workers(o)
  local RM = require "lmp.redis"
  local copts = {timeout = o.timeout or 5, reconnect_timeout = 0, tls = o.tls}
  local cl = o.cluster and require("lmp.redis_cluster").client(o.url, copts) or RM.client(o.url, copts)
  if o.watch or o.json then        -- lmp.redis_watch: a live table, or JSON
    local function fetch() return RM.stats(cl, o.queue, o.shards) end
    return require("lmp.redis_watch").run(o, fetch, cl)
  end
  local s = RM.stats(cl, o.queue, o.shards)
  cl:close()
  print(string.format("queue %s: %d waiting, %d pending (in workers' hands), %d dead-lettered",
    o.queue, s.waiting, s.pending, s.dead))
  if #s.shards > 1 then
    for _, sh in ipairs(s.shards) do
      print(string.format("  shard {%s}: %d waiting, %d pending, %d dead-lettered",
        sh.name, sh.waiting, sh.pending, sh.dead))
    end
  end
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
