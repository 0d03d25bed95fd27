-- lmp.RedisPool and `lmp worker`: at-least-once tasks over Redis streams,
-- each test against a redis-server of its own (spec/helpers/redis.lua).
local lmp = require "lmp"
local H = require "helper"
local range = H.range
local err_of = H.err_of
local RH = require "helpers.redis"
local RM = require "lmp.redis"

describe("lmp.RedisPool", function()
  local srv, workers = nil, {}
  local function worker(queue, opts)
    local w = RH.worker(srv, queue, opts)
    workers[#workers + 1] = w
    return w
  end
  setup(function() srv = RH.start() end)
  teardown(function() srv:stop() end)
  after_each(function()
    for _, w in ipairs(workers) do RH.stop_worker(w) end
    workers = {}
  end)

  describe("connecting", function()
    it("refuses a bad URL with a message naming it", function()
      local e = err_of(lmp.RedisPool, {url = "http://localhost:6379", queue = "q"})
      assert.matches("bad Redis URL 'http://localhost:6379'", tostring(e), 1, true)
      e = err_of(lmp.RedisPool, {url = "redis://host:99999/0", queue = "q"})
      assert.matches("bad host or port", tostring(e), 1, true)
    end)

    it("parses redis:// and unix:// URLs", function()
      local R = require "lmp.c.redis"
      local u = R.parse_url("redis://us%40er:p%3Aw@[::1]:7000/3")
      assert.equal("::1", u.host)
      assert.equal(7000, u.port)
      assert.equal("us@er", u.user)
      assert.equal("p:w", u.password)
      assert.equal(3, u.db)
      u = R.parse_url("redis://:pw@example.org")
      assert.equal("example.org", u.host)
      assert.equal(6379, u.port)
      assert.equal("", u.user)
      assert.equal("pw", u.password)
      assert.equal(0, u.db)
      u = R.parse_url("unix:///run/redis.sock?db=2")
      assert.equal("/run/redis.sock", u.path)
      assert.equal(2, u.db)
      for _, bad in ipairs({"redis://", "redis://h:0", "redis://h/x", "rediss://h:0",
                            "redis://u@h", "redis://:%zz@h", "unix://rel"}) do
        assert.is_false(pcall(R.parse_url, bad), bad)
      end
    end)

    it("raises auth for a wrong password, quickly", function()
      local s2 = RH.start{password = "s3cret"}
      local t0 = lmp.time()
      local url = s2.url:gsub("s3cret", "wrong")
      local e = err_of(lmp.RedisPool, {url = url, queue = "q", timeout = 20})
      assert.is_true(lmp.is_error(e, "auth"))
      assert.matches("refused the credentials", e.message, 1, true)
      e = err_of(lmp.RedisPool, {url = url:gsub(":wrong@", ""), queue = "q", timeout = 20})
      assert.is_true(lmp.is_error(e, "auth"))
      assert.matches("NOAUTH", e.message, 1, true)
      local p = lmp.RedisPool{url = s2.url, queue = "q", timeout = 20}
      p:terminate()
      -- quickly: neither refusal waited out its 20 s timeout
      assert.is_true(lmp.time() - t0 < 10)
      s2:stop()
    end)

    it("raises a clear error within the timeout when Redis is down", function()
      local port = H.free_port()
      local t0 = lmp.time()
      local e = err_of(lmp.RedisPool, {url = "redis://127.0.0.1:" .. port .. "/0",
                                       queue = "q", timeout = 1})
      assert.is_true(lmp.is_error(e, "os"))
      assert.matches("cannot connect to Redis at 127.0.0.1:" .. port, e.message, 1, true)
      assert.matches("refused", e.message, 1, true)
      -- within its 1 s timeout, give or take a busy machine
      assert.is_true(lmp.time() - t0 < 5)
    end)

    it("refuses a connection used in a forked child", function()
      local r = H.run_lmp(string.format([[
        local R = require "lmp.c.redis"
        local c = R.connect(%q)
        local P = require "lmp.process"
        local pid = P._fork()
        if pid == 0 then
          local ok, e = pcall(c.call, c, "PING")
          io.write(tostring(ok), " ", tostring(e and e.kind), " ", tostring(e and e.message), "\n")
          P._exit(0)
        end
        lmp.sleep(0.01)
        for _ = 1, 500 do if #lmp.active_children() == 0 then break end lmp.sleep(0.01) end
        print(c:call("PING"))
      ]], srv.url), {timeout = 20})
      assert.equal(0, r.code, r.err)
      assert.matches("false closed Redis connection was opened by process %d+", r.out)
      assert.matches("PONG", r.out, 1, true)
    end)
  end)

  describe("with workers", function()
    it("has Pool's methods: apply, map, starmap, imap, callbacks", function()
      worker("api", {concurrency = 2})
      local pool = lmp.RedisPool{url = srv.url, queue = "api", visibility_timeout = 5}
      local k = 10
      assert.equal(13, pool:apply(function(a, b) return a + b + k end, {1, 2}))
      local r = pool:map(function(x) return x * x end, range(50), 7)
      assert.equal(50, #r)
      for i = 1, 50 do assert.equal(i * i, r[i]) end
      assert.same({3, 7}, pool:starmap(function(a, b) return a + b end, {{1, 2}, {3, 4}}))
      local got = {}
      for v in pool:imap(function(x) return x + 1 end, range(20), 3, 10) do got[#got + 1] = v end
      assert.same((function() local t = {} for i = 1, 20 do t[i] = i + 1 end return t end)(), got)
      local sum = 0
      for v in pool:imap_unordered(function(x) return x end, range(30)) do sum = sum + v end
      assert.equal(465, sum)
      local cb, ecb
      local a = pool:apply_async(function() return "yes" end, {}, {callback = function(v) cb = v end})
      local b = pool:apply_async(function() error("no!") end, {}, {error_callback = function(e) ecb = e end})
      assert.equal("yes", a:get(10))
      assert.is_true(b:wait(10))
      assert.is_false(b:successful())
      assert.equal("yes", cb)
      assert.is_true(lmp.is_error(ecb, "remote"))
      assert.matches("no!", ecb.message, 1, true)
      assert.matches("stack traceback", ecb.traceback, 1, true)
      local e = err_of(b.get, b, 0)
      assert.equal(ecb, e)
      pool:close()
      assert.is_true(pool:join(10))
    end)

    it("refuses oversized tasks at submit and oversized results", function()
      worker("big")
      local pool = lmp.RedisPool{url = srv.url, queue = "big", max_task_size = 1000,
                                 max_result_size = 1000}
      local e = err_of(pool.apply_async, pool, function(s) return #s end, {string.rep("x", 2000)})
      assert.is_true(lmp.is_error(e, "full"))
      assert.matches("over the RedisPool's max_task_size (1000 bytes)", e.message, 1, true)
      assert.equal(0, pool.npending)
      e = err_of(pool.apply, pool, function() return string.rep("y", 5000) end)
      assert.is_true(lmp.is_error(e, "full"))
      assert.matches("over max_result_size (1000 bytes)", e.message, 1, true)
      assert.equal(5, pool:apply(function(s) return #s end, {"hello"}))
      pool:terminate()
    end)

    it("delivers 10,000 tasks through 3 workers exactly once", function()
      for _ = 1, 3 do worker("many", {args = "--prefetch 16"}) end
      local pool = lmp.RedisPool{url = srv.url, queue = "many"}
      local n = 10000
      local seen, count = {}, 0
      local t0 = lmp.time()
      local job = pool:map_async(function(x) return x * 2 end, range(n), 1)
      local r = job:get(60)
      assert.equal(n, #r)
      for i = 1, n do
        if r[i] == i * 2 then count = count + 1 end
      end
      assert.equal(n, count)
      -- callbacks: each result reaches the caller once
      local calls = 0
      for i = 1, 300 do
        pool:apply_async(function(x) return x end, {i}, {callback = function(v)
          seen[v] = (seen[v] or 0) + 1
          calls = calls + 1
        end})
      end
      pool:close()
      assert.is_true(pool:join(30))
      assert.equal(300, calls)
      for i = 1, 300 do assert.equal(1, seen[i]) end
      local dt = lmp.time() - t0
      io.stderr:write(string.format("[10k tasks via Redis, 3 workers: %.2fs]\n", dt))
      local s = RM.stats(srv:client(), "many")
      assert.equal(0, s.length)
      assert.equal(0, s.pending)
      assert.equal(3, #s.workers)
    end)

    it("redelivers the task of a SIGKILLed worker after the visibility timeout", function()
      local dir = RH.sh("mktemp -d"):gsub("%s+$", "")
      local w1 = worker("kill")
      local pool = lmp.RedisPool{url = srv.url, queue = "kill", visibility_timeout = 1}
      -- from the submission: the task is taken after it, and redelivered
      -- once it has been idle 1 s (the time from the kill would depend on
      -- how fast the first worker got to it)
      local t_submit = lmp.time()
      local r = pool:apply_async(function(path)
        local f = io.open(path .. "/" .. require("lmp").current_process().pid, "w")
        f:close()
        require("lmp").sleep(0.3)
        return "done"
      end, {dir})
      assert.truthy(H.wait_until(function() return RH.sh("ls " .. dir) ~= "" end, 10))
      RH.stop_worker(w1, "KILL")
      worker("kill")
      assert.equal("done", r:get(20))
      local dt = lmp.time() - t_submit
      io.stderr:write(string.format("[done %.2fs after the submission, visibility 1s]\n", dt))
      assert.is_true(dt >= 1.2, "done " .. dt .. " s after the submission")   -- 1 s idle + 0.3 s run
      local ran = 0
      for _ in RH.sh("ls " .. dir):gmatch("%d+") do ran = ran + 1 end
      assert.equal(2, ran)
      RH.sh("rm -rf " .. dir)
      pool:terminate()
    end)

    it("does not duplicate a slow task whose worker heartbeats", function()
      local log = os.tmpname()
      worker("slow") worker("slow")
      -- the task runs 2.5 visibility timeouts; the worker heartbeats every
      -- third of one (a busy machine may delay a heartbeat by 0.6 s)
      local pool = lmp.RedisPool{url = srv.url, queue = "slow", visibility_timeout = 1}
      local r = pool:apply_async(function(path)
        local f = io.open(path, "a") f:write("run\n") f:close()
        require("lmp").sleep(2.5)
        return "slow done"
      end, {log})
      assert.equal("slow done", r:get(20))
      assert.equal(1, RH.count_lines(log))
      os.remove(log)
      pool:terminate()
    end)

    it("dead-letters a poison task after max_retries with its error", function()
      worker("poison", {concurrency = 2})
      local pool = lmp.RedisPool{url = srv.url, queue = "poison", max_retries = 2,
                                 visibility_timeout = 5}
      local r = pool:apply_async(function() os.exit(7) end)
      local e = err_of(r.get, r, 20)
      assert.is_true(lmp.is_error(e, "worker_lost"))
      assert.is_true(e.dead_letter)
      assert.equal(2, e.deliveries)
      assert.matches("dead%-lettered", e.message)
      local dl = pool:dead_letters()
      assert.equal(1, #dl)
      assert.equal(r.id, dl[1].task)
      assert.equal(2, dl[1].deliveries)
      assert.matches("exit code 7", dl[1].error, 1, true)
      -- a task that raises, with retry_errors: remote, with the traceback
      local p2 = lmp.RedisPool{url = srv.url, queue = "poison", max_retries = 3, retry_errors = true}
      local r2 = p2:apply_async(function() error("always fails") end)
      e = err_of(r2.get, r2, 20)
      assert.is_true(lmp.is_error(e, "remote"))
      assert.equal(3, e.deliveries)
      assert.matches("always fails", e.message, 1, true)
      assert.matches("stack traceback", e.traceback, 1, true)
      assert.equal(2, #pool:dead_letters())
      local s = pool:stats()
      assert.equal(2, s.dead)
      assert.equal(0, s.pending)
      pool:terminate() p2:terminate()
    end)

    it("lets a restarted master reattach to a result by task id", function()
      local pool = lmp.RedisPool{url = srv.url, queue = "re"}
      local id = pool:apply_async(function() return 42 end).id
      pool:terminate()
      worker("re")
      local p2 = lmp.RedisPool{url = srv.url, queue = "re"}
      assert.equal(42, p2:result(id):get(10))
      p2:terminate()
    end)

    it("runs a task queued by an earlier lmp (a field for each number)", function()
      local K = RM._keys("old")
      local S = srv:client()
      RM._ensure_group(S, K)
      local pickle = require "lmp.pickle"
      S:call("XADD", K.tasks, "*", "t", "oldcaller:1", "n", K.prefix .. "n:oldcaller",
        "m", 3, "ttl", 60000, "v", 30000, "x", 4194304, "e", 0, "c", 2, "s", 1,
        "f", pickle.dumps(function(a, b) return a + b end), "a", pickle.dumps({{1, 2}, {3, 4}}))
      worker("old")
      local pool = lmp.RedisPool{url = srv.url, queue = "old"}
      assert.same({3, 7}, pool:result("oldcaller:1"):get(10))   -- both items, star-applied
      pool:terminate()
    end)

    it("drains on SIGTERM and lists live workers", function()
      local w = worker("drain", {concurrency = 1})
      local pool = lmp.RedisPool{url = srv.url, queue = "drain"}
      -- the task runs until the spec lets it end (a file appears), so it is
      -- pending while `lmp workers` looks and when SIGTERM comes, however
      -- slow the machine
      local go = os.tmpname()
      os.remove(go)
      local r = pool:apply_async(function(path)
        local lmp = require "lmp"
        local deadline = lmp.time() + 30
        repeat
          local f = io.open(path)
          if f then f:close() return "drained" end
          lmp.sleep(0.01)
        until lmp.time() > deadline
        return "never let go"
      end, {go})
      assert.truthy(H.wait_until(function() return pool:stats().pending == 1 end, 10))
      local out = RH.sh(string.format("%s workers --redis %s --queue drain", H.lmp_bin, srv.url))
      assert.matches("1 live worker", out, 1, true)
      assert.matches("1 pending", out, 1, true)
      RH.sh("kill -TERM " .. w.pid)
      assert.truthy(H.wait_until(function()
        return (RH.read_file(w.log) or ""):find("draining", 1, true)
      end, 10), RH.read_file(w.log))
      assert.truthy(RH.alive(w.pid))            -- still running its task
      io.open(go, "w"):close()
      assert.equal("drained", r:get(10))
      os.remove(go)
      assert.truthy(H.wait_until(function() return not RH.alive(w.pid) end, 10))
      local log = RH.stop_worker(w)
      assert.matches("draining", log, 1, true)
      assert.matches("stopped: 1 task", log, 1, true)
      out = RH.sh(string.format("%s workers --redis %s --queue drain", H.lmp_bin, srv.url))
      assert.matches("0 live worker", out, 1, true)
      pool:terminate()
    end)

    it("exits 2 with usage on bad worker arguments", function()
      local out = RH.sh(H.lmp_bin .. " worker --queue x 2>&1; echo rc=$?")
      assert.matches("--redis URL is required", out, 1, true)
      assert.matches("rc=2", out, 1, true)
    end)
  end)

  describe("its scripts", function()
    local S
    local K = RM._keys("scripts")
    local function add(cl, tid, max)
      return cl:call("XADD", K.tasks, "*", "t", tid, "h",
        string.format("1 0 %d 60000 30000 1000 0", max or 3), "f", "", "a", "")
    end
    before_each(function()
      S = srv:client()
      S:call("DEL", K.tasks, K.dead, K.err)
      RM._ensure_group(S, K)
    end)

    it("discard a result from a worker whose delivery was reclaimed", function()
      local id = add(S, "c1:1")
      local a = S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "A", 0, 1, "0-0", 1, K.prefix})
      assert.equal(id, a[2][1])
      assert.equal(1, a[2][2])
      local b = S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "B", 0, 1, "0-0", 0, K.prefix})
      assert.equal(id, b[2][1])
      assert.equal(2, b[2][2])                       -- the reclaim counted a delivery
      local r = S:eval("commit", {K.tasks, K.err}, {"lmp", "A", K.prefix, id, id, "c1", 60000, 1, id, 1, "c1:1", "Ostale"})
      assert.same({0}, r)
      assert.equal("stale", S:eval("fail", {K.tasks, K.dead, K.err},
        {"lmp", "A", K.prefix, id, 1, "late", "", 0}))
      assert.same({0}, S:eval("heartbeat", {K.tasks, K.workers, K.winfo}, {"lmp", "A", 1000, "", id, 1}))
      r = S:eval("commit", {K.tasks, K.err}, {"lmp", "B", K.prefix, id, id, "c1", 60000, 1, id, 2, "c1:1", "Ofresh"})
      assert.same({1}, r)
      assert.equal("Ofresh", S:call("HGET", K.prefix .. "r:c1", "c1:1"))
      assert.same({"c1:1"}, S:call("LRANGE", K.prefix .. "n:c1", 0, -1))
      assert.equal(0, S:call("XLEN", K.tasks))
    end)

    it("commit a batch: owned results per caller, stale and repeated ones dropped", function()
      local a1, b1, a2, st = add(S, "ca:1"), add(S, "cb:1"), add(S, "ca:2"), add(S, "ca:3")
      S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "A", 0, 4, "0-0", 1, K.prefix})
      -- st is reclaimed by B (its delivery 2): A's result for it is stale
      S:call("XCLAIM", K.tasks, "lmp", "B", 0, st)
      local r = S:eval("commit", {K.tasks, K.err}, {"lmp", "A", K.prefix, a1, st,
        "ca", 60000, 4, a2, 1, "ca:2", "O2", a1, 1, "ca:1", "O1",
                        st, 1, "ca:3", "Ostale", a1, 1, "ca:1", "Oagain",
        "cb", 5000, 1, b1, 1, "cb:1", "Ob"})
      assert.same({1, 1, 0, 0, 1}, r)
      assert.same({"O1", "O2", false}, S:call("HMGET", K.prefix .. "r:ca", "ca:1", "ca:2", "ca:3"))
      assert.same({"ca:2", "ca:1"}, S:call("LRANGE", K.prefix .. "n:ca", 0, -1))
      assert.same({"cb:1"}, S:call("LRANGE", K.prefix .. "n:cb", 0, -1))
      assert.equal("Ob", S:call("HGET", K.prefix .. "r:cb", "cb:1"))
      local ttl = S:call("PTTL", K.prefix .. "r:cb")
      assert.truthy(ttl > 0 and ttl <= 5000)
      assert.truthy(S:call("PTTL", K.prefix .. "n:ca") > 5000)
      assert.equal(1, S:call("XLEN", K.tasks))       -- only the stale one is left
      assert.equal(st, S:call("XRANGE", K.tasks, "-", "+")[1][1])
      local got = S:eval("collect", {K.prefix .. "n:ca", K.prefix .. "r:ca"}, {10})
      assert.same({"ca:2", "O2", "ca:1", "O1"}, got)
      assert.equal(0, S:call("EXISTS", K.prefix .. "r:ca"))   -- taken, not copied
      assert.same({}, S:eval("collect", {K.prefix .. "n:ca", K.prefix .. "r:ca"}, {10}))
      S:call("DEL", K.prefix .. "r:cb", K.prefix .. "n:cb")
    end)

    it("order stream ids as numbers", function()
      local before = RM._id_before
      for _, c in ipairs({{"1-0", "2-0"}, {"9-5", "10-0"}, {"10-9", "10-10"}, {"10-99", "11-0"},
                          {"1700000000000-9", "1700000000000-10"}, {"1699999999999-99", "1700000000000-0"}}) do
        assert.is_true(before(c[1], c[2]), c[1] .. " < " .. c[2])
        assert.is_false(before(c[2], c[1]), c[2] .. " > " .. c[1])
      end
      assert.is_false(before("5-5", "5-5"))
    end)

    it("count reclaims and dead-letter past the limit", function()
      local id = add(S, "c2:7", 2)
      S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "A", 0, 1, "0-0", 1, K.prefix})
      local b = S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "B", 0, 1, "0-0", 0, K.prefix})
      assert.equal(2, b[2][2])
      local c = S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "C", 0, 1, "0-0", 0, K.prefix})
      assert.equal(1, #c)                            -- nothing handed out: dead
      assert.equal(1, S:call("XLEN", K.dead))
      local v = S:call("HGET", K.prefix .. "r:c2", "c2:7")
      local ok, e = RM._decode_result("c2:7", v)
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e, "worker_lost"))
      assert.equal(2, e.deliveries)
      assert.equal(0, S:call("XLEN", K.tasks))
      -- the dead letter keeps the task's own fields: XADD them back to re-queue it
      local f = {}
      local dl = S:call("XRANGE", K.dead, "-", "+")[1][2]
      for i = 1, #dl, 2 do f[dl[i]] = dl[i + 1] end
      assert.equal(id, f.id)
      assert.equal("c2:7", f.t)
      local again = S:call("XADD", K.tasks, "*", "t", f.t, "h", f.h, "f", f.f, "a", f.a)
      local d = S:eval("fetch", {K.tasks, K.dead, K.err}, {"lmp", "D", 0, 1, "0-0", 1, K.prefix})
      assert.equal(again, d[2][1])
      assert.same({"t", "c2:7", "h", "1 0 2 60000 30000 1000 0", "f", "", "a", ""}, d[2][3])
    end)
  end)

  describe("when redis-server restarts", function()
    it("reconnects with backoff and loses no task (AOF on)", function()
      local s2 = RH.start{aof = true}
      local saved = srv
      srv = s2
      local ok, err = pcall(function()
        worker("restart", {concurrency = 2}) worker("restart", {concurrency = 2})
        local pool = lmp.RedisPool{url = s2.url, queue = "restart", visibility_timeout = 2,
                                   reconnect_timeout = 20}
        local n, calls, seen = 400, 0, {}
        local jobs = {}
        -- tasks after the 50th end only once Redis is back (a file says
        -- so): however fast the workers, work is in flight across the
        -- restart, and workers and caller must reconnect to finish it
        local back = os.tmpname()
        os.remove(back)
        for i = 1, n do
          jobs[i] = pool:apply_async(function(x, path)
            local lmp = require "lmp"
            local deadline = lmp.time() + 30
            while x > 50 and lmp.time() < deadline do
              local f = io.open(path)
              if f then f:close() break end
              lmp.sleep(0.01)
            end
            lmp.sleep(0.005)
            return x
          end, {i, back},
            {callback = function(v) seen[v] = (seen[v] or 0) + 1 calls = calls + 1 end})
        end
        assert.truthy(H.wait_until(function() pool:poll(0.01) return calls >= 50 end, 20))
        s2:kill("KILL")
        lmp.sleep(0.3)                     -- Redis stays down a moment
        s2:restart()
        io.open(back, "w"):close()
        for i = 1, n do assert.equal(i, jobs[i]:get(30)) end
        os.remove(back)
        assert.equal(n, calls)
        for i = 1, n do assert.equal(1, seen[i]) end
        assert.is_true(pool.cl.reconnects >= 1)
        local logs = RH.read_file(workers[1].log) .. RH.read_file(workers[2].log)
        assert.matches("lost Redis", logs, 1, true)
        assert.matches("reconnected to Redis", logs, 1, true)
        pool:terminate()
      end)
      srv = saved
      for _, w in ipairs(workers) do RH.stop_worker(w) end
      workers = {}
      s2:stop()
      assert(ok, err)
    end)
  end)
end)
