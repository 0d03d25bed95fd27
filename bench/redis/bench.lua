-- Tiny tasks through Redis: lmp.RedisPool with 2 `lmp worker` processes
-- (each --concurrency 1 --prefetch 128, as docs/api/redis.md advises for
-- tiny tasks) on a private redis-server, beside
-- `redis-benchmark -t lpush,rpop` on the same server in the same run.
local lmp = require "lmp"
local RC = require "lmp.c.redis"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local N = tonumber(arg[1]) or 20000
local lmp_bin = os.getenv("LMP_BIN") or "./lmp"
local port = tonumber(sh([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']]))
local dir = sh("mktemp -d /tmp/lmp-redis-bench.XXXXXX"):gsub("%s+$", "")
local url = string.format("redis://127.0.0.1:%d/0", port)
sh(string.format("redis-server --port %d --bind 127.0.0.1 --dir %s --save '' --appendonly no "
  .. "--daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log", port, dir, dir, dir))
for _ = 1, 500 do
  if pcall(function() RC.connect(url, {timeout = 0.5}):close() end) then break end
  lmp.sleep(0.01)
end

local pids = {}
local function cleanup()
  for _, pid in ipairs(pids) do sh("kill -TERM " .. pid .. " 2>/dev/null") end
  lmp.sleep(0.3)
  for _, pid in ipairs(pids) do sh("kill -KILL " .. pid .. " 2>/dev/null") end
  local rp = sh("cat " .. dir .. "/redis.pid 2>/dev/null"):gsub("%s+$", "")
  if rp ~= "" then sh("kill -KILL " .. rp) end
  sh("rm -rf " .. dir)
end

local ok, err = pcall(function()
  local raw = sh(string.format("redis-benchmark -p %d -t lpush,rpop -n 200000 -q 2>/dev/null", port))
  local lpush = tonumber(raw:match("LPUSH: ([%d%.]+)"))
  local rpop = tonumber(raw:match("RPOP: ([%d%.]+)"))
  sh(string.format("redis-cli -p %d FLUSHALL", port))
  -- the same work on a second queue whose tasks and results are signed
  local key = string.rep("k", 48)
  local f = assert(io.open(dir .. "/key", "wb"))
  f:write(key)
  f:close()
  for _, q in ipairs({"bench", "bench_signed"}) do
    for _ = 1, 2 do
      pids[#pids + 1] = tonumber(sh(string.format(
        "(exec %s worker --redis %s --queue %s --concurrency 1 --prefetch 128 --quiet %s </dev/null >/dev/null 2>&1) & echo $!",
        lmp_bin, url, q, q == "bench" and "" or "--authkey-file " .. dir .. "/key")))
    end
  end
  local pool = lmp.RedisPool{url = url, queue = "bench"}
  local signed = lmp.RedisPool{url = url, queue = "bench_signed", authkey = key}
  local list = {}
  for i = 1, N do list[i] = i end
  pool:map(function(x) return x + 1 end, list, 1)        -- warm up
  signed:map(function(x) return x + 1 end, list, 1)
  local best, best_chunked, best_signed = math.huge, math.huge, math.huge
  for _ = 1, 3 do
    local t0 = lmp.time()
    local r = pool:map(function(x) return x + 1 end, list, 1)
    assert(#r == N and r[N] == N + 1)
    best = math.min(best, lmp.time() - t0)
    t0 = lmp.time()
    r = signed:map(function(x) return x + 1 end, list, 1)
    assert(#r == N and r[N] == N + 1)
    best_signed = math.min(best_signed, lmp.time() - t0)
    t0 = lmp.time()
    r = pool:map(function(x) return x + 1 end, list, 100)
    assert(#r == N and r[N] == N + 1)
    best_chunked = math.min(best_chunked, lmp.time() - t0)
  end
  local lat = {}
  for i = 1, 500 do
    local t0 = lmp.time()
    pool:apply(function(x) return x end, {i})
    lat[i] = lmp.time() - t0
  end
  table.sort(lat)
  pool:terminate()
  signed:terminate()
  local rate = N / best
  local raw_mean = lpush and rpop and (lpush + rpop) / 2
  print(string.format("redis-benchmark raw (50 clients): LPUSH %.0f/s, RPOP %.0f/s (mean %.0f/s)",
    lpush or 0, rpop or 0, raw_mean or 0))
  print(string.format("%-46s | lmp %10.0f tasks/s | raw LPUSH/RPOP mean %8.0f/s | %.0f%% of raw  (goal >= 30%%)",
    string.format("RedisPool map %d tiny tasks, chunksize 1", N), rate, raw_mean or 0,
    raw_mean and 100 * rate / raw_mean or 0))
  print(string.format("%-46s | lmp %10.0f tasks/s | unsigned %8.0f/s | cost of signing %.1f%%  (goal <= 10%%)",
    "RedisPool map, chunksize 1, with an authkey", N / best_signed, rate, 100 * (1 - best / best_signed)))
  print(string.format("%-46s | lmp %10.0f tasks/s", "RedisPool map, chunksize 100", N / best_chunked))
  print(string.format("%-46s | median %.0f us, p90 %.0f us, p99 %.0f us",
    "apply():get() round trip via Redis", lat[250] * 1e6, lat[450] * 1e6, lat[495] * 1e6))
  print("Python RQ-style baseline: n/a (no Python Redis client installed: `import redis` fails)")
end)
cleanup()
if not ok then error(err, 0) end
