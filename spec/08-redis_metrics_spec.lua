-- `lmp worker --metrics`: Prometheus's text format served from the
-- worker's own loop (lmp.metrics), and `lmp workers --watch / --json`.
-- Against a redis-server of its own (spec/helpers/redis.lua).
local lmp = require "lmp"
local H = require "helper"
local RH = require "helpers.redis"
local MX = require "lmp.metrics"
local S = require "lmp.socket"
local cjson = require "cjson"

-- One HTTP exchange with a plain lmp socket: status, body.
local function http(port, request)
  local c = S.connect("127.0.0.1", port, 5)
  c:write(request, 5)
  local parts = {}
  while true do
    local s = c:read("a", 5)
    if not s then break end
    parts[#parts + 1] = s
  end
  c:close()
  local resp = table.concat(parts)
  return tonumber(resp:match("^HTTP/1%.1 (%d+)")), resp:match("\r\n\r\n(.*)$"), resp
end

local function scrape(port)
  local code, body, resp = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
  assert.equal(200, code)
  assert.matches("Content-Type: text/plain; version=0.0.4", resp, 1, true)
  local m = {}
  for line in body:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local key, v = line:match("^(%S+) (%S+)$")
      assert.is_not_nil(key, line)
      m[key] = v == "+Inf" and math.huge or tonumber(v)
    end
  end
  return m, body
end

describe("lmp.metrics", function()
  it("formats counters, gauges and cumulative histogram buckets", function()
    local h = MX.histogram({0.1, 1})
    h:observe(0.05) h:observe(0.5) h:observe(7)
    local text = MX.format{
      {name = "a_total", type = "counter", help = "A \\ b\nc.", labels = MX.labels{q = 'x"y'}, value = 3},
      {name = "g", type = "gauge", help = "G.", value = 0.25},
      {name = "d_seconds", type = "histogram", help = "D.", labels = MX.labels{q = "x"}, hist = h},
    }
    assert.equal(table.concat({
      "# HELP a_total A \\\\ b\\nc.", "# TYPE a_total counter", 'a_total{q="x\\"y"} 3',
      "# HELP g G.", "# TYPE g gauge", "g 0.25",
      "# HELP d_seconds D.", "# TYPE d_seconds histogram",
      'd_seconds_bucket{q="x",le="0.1"} 1', 'd_seconds_bucket{q="x",le="1"} 2',
      'd_seconds_bucket{q="x",le="+Inf"} 3', 'd_seconds_sum{q="x"} 7.55',
      'd_seconds_count{q="x"} 3', ""}, "\n"), text)
  end)

  it("binds loopback for PORT and :PORT, the host given otherwise", function()
    local h, p = MX.parse_address("9100")
    assert.equal("127.0.0.1", h)
    assert.equal(9100, p)
    h, p = MX.parse_address(":9101")
    assert.equal("127.0.0.1", h)
    assert.equal(9101, p)
    h, p = MX.parse_address("0.0.0.0:9102")
    assert.equal("0.0.0.0", h)
    assert.equal(9102, p)
    h, p = MX.parse_address("[::1]:9103")
    assert.equal("::1", h)
    assert.equal(9103, p)
    for _, bad in ipairs({"", "host", "host:", "1:2:3", "99999", ":x"}) do
      assert.is_false(pcall(MX.parse_address, bad), bad)
    end
  end)
end)

describe("lmp worker --metrics", function()
  local srv, w, port, pool
  setup(function()
    srv = RH.start()
    port = H.free_port()
    w = RH.worker(srv, "mq", {args = "--metrics 127.0.0.1:" .. port})
    assert.truthy(H.wait_until(function()
      return (RH.read_file(w.log) or ""):find("metrics on http://127.0.0.1:" .. port, 1, true)
    end, 10), RH.read_file(w.log))
    pool = lmp.RedisPool{url = srv.url, queue = "mq", retry_errors = true, max_retries = 2,
      visibility_timeout = 1}
  end)
  teardown(function()
    if pool then pool:terminate() end
    RH.stop_worker(w)
    srv:stop()
  end)

  it("counts tasks done, failed, retried and dead-lettered; promtool accepts it", function()
    assert.same({2, 4, 6}, pool:map(function(x) return 2 * x end, {1, 2, 3}))
    local ok, e = pcall(function() return pool:apply(function() error("boom") end, {}) end)
    assert.is_false(ok)
    assert.is_true(e.dead_letter)
    local L = '{queue="mq"}'
    -- the caller may hear of the dead letter a moment before the worker counts it
    local m, text
    H.wait_until(function()
      m, text = scrape(port)
      return m["lmp_worker_tasks_dead_lettered_total" .. L] == 1
    end, 10, 0.02)
    assert.equal(3, m["lmp_worker_tasks_done_total" .. L])
    assert.equal(2, m["lmp_worker_tasks_failed_total" .. L])         -- two deliveries raised
    assert.equal(1, m["lmp_worker_tasks_retried_total" .. L])
    assert.equal(1, m["lmp_worker_tasks_dead_lettered_total" .. L])
    assert.equal(0, m["lmp_worker_tasks_in_hand" .. L])
    assert.equal(0, m["lmp_worker_tasks_prefetched" .. L])
    assert.equal(0, m["lmp_worker_redis_reconnects_total" .. L])
    -- five runs came back from the pool: three values, two errors
    assert.equal(5, m['lmp_worker_task_duration_seconds_count' .. L])
    assert.equal(5, m['lmp_worker_task_duration_seconds_bucket{queue="mq",le="+Inf"}'])
    assert.is_true(m['lmp_worker_task_duration_seconds_sum' .. L] >= 0)
    assert.is_true(m.process_cpu_seconds_total >= 0)
    assert.is_true(m.process_resident_memory_bytes > 1024 * 1024)
    if os.execute("command -v promtool >/dev/null 2>&1") then
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
      local r = H.sh("timeout 20 promtool check metrics < " .. path)
      os.remove(path)
      assert.equal(0, r.code, r.out .. r.err)
      assert.is_nil((r.out .. r.err):lower():find("error"), r.out .. r.err)
    end
  end)

  it("answers 404 to anything but GET /metrics, 400 to a bad request", function()
    assert.equal(404, (http(port, "GET / HTTP/1.1\r\n\r\n")))
    assert.equal(404, (http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")))
    assert.equal(200, (http(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n")))
    assert.equal(400, (http(port, "hello\r\n\r\n")))
    assert.equal(400, (http(port, string.rep("x", 9000))))       -- no end of head in 8 KiB
  end)

  it("goes on with tasks while a client connects and sends nothing", function()
    local idle = S.connect("127.0.0.1", port, 5)
    local half = S.connect("127.0.0.1", port, 5)
    half:write("GET /met", 5)
    local r = pool:map_async(function(x) return x + 1 end, {1, 2, 3, 4, 5})
    assert.same({2, 3, 4, 5, 6}, r:get(20))
    local m = scrape(port)                                  -- and others are served
    assert.equal(8, m['lmp_worker_tasks_done_total{queue="mq"}'])
    -- the silent clients are dropped after their time (2 s): EOF, no answer
    assert.is_nil(idle:read("a", 10))
    assert.is_nil(half:read("a", 10))
    idle:close()
    half:close()
  end)
end)

describe("lmp workers --watch / --json", function()
  local srv, w
  setup(function()
    srv = RH.start()
    w = RH.worker(srv, "wq")
    -- a short visibility timeout: heartbeats (which carry the counts) every 1/3 s
    local pool = lmp.RedisPool{url = srv.url, queue = "wq", visibility_timeout = 1}
    assert.same({1, 2}, pool:map(function(x) return x end, {1, 2}))
    pool:terminate()
    assert.truthy(H.wait_until(function()                 -- registered, with its count
      local r = H.sh(string.format("timeout 10 %s workers --redis %s --queue wq --json",
        H.shell_quote(H.lmp_bin), srv.url))
      local ok, d = pcall(cjson.decode, r.out)
      return ok and d.workers[1] and d.workers[1].processed == 2
    end, 10, 0.05))
  end)
  teardown(function()
    RH.stop_worker(w)
    srv:stop()
  end)

  it("--json prints the queue and its workers once, for scripts", function()
    local r = H.sh(string.format("timeout 10 %s workers --redis %s --queue wq --json",
      H.shell_quote(H.lmp_bin), srv.url))
    assert.equal(0, r.code, r.err)
    local d = cjson.decode(r.out)
    assert.equal("wq", d.queue)
    assert.equal(0, d.waiting)
    assert.equal(0, d.pending)
    assert.equal(0, d.dead)
    assert.equal(1, #d.workers)
    local x = d.workers[1]
    assert.equal(w.pid, x.pid)
    assert.equal("string", type(x.host))
    assert.equal(1, x.concurrency)
    assert.equal(2, x.processed)
    assert.equal(0, x.in_hand)
    assert.is_true(x.heartbeat_age >= 0 and x.heartbeat_age < 30)
  end)

  it("--watch redraws a table per refresh until interrupted", function()
    -- not a tty here: tables follow each other, a blank line between
    local r = H.sh(string.format("timeout -k 2 1.5 %s workers --redis %s --queue wq --watch 0.2",
      H.shell_quote(H.lmp_bin), srv.url))
    local tables = {}
    for t in (r.out .. "\n"):gmatch("(lmp workers: queue wq.-)\n\n") do tables[#tables + 1] = t end
    assert.is_true(#tables >= 2, r.out .. r.err)
    assert.is_nil(r.out:find("\27[", 1, true))
    local pid = tostring(w.pid)
    for i = 1, 2 do
      assert.matches("waiting 0  pending 0  dead 0  workers 1", tables[i], 1, true)
      assert.matches("HOST%s+PID%s+TASKS/S%s+IN HAND%s+DONE%s+LAST HB", tables[i])
    end
    -- the first refresh has no rate yet; the second computes one
    assert.matches(pid .. "%s+%-%s+0%s+2%s", tables[1])
    assert.matches(pid .. "%s+0%.0%s+0%s+2%s", tables[2])
  end)
end)
