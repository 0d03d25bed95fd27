-- lmp.RedisPool with shards (one queue over K streams) on one Redis, and
-- on a 3-master Redis Cluster (spec/helpers/redis_cluster.lua): routing by
-- slot, MOVED/ASK during a slot migration, results from every shard.
local lmp = require "lmp"
local H = require "helper"
local range = H.range
local RH = require "helpers.redis"
local CH = require "helpers.redis_cluster"
local RM = require "lmp.redis"
local RC = require "lmp.redis_cluster"

local function check_squares(r, n)
  assert.equal(n, #r)
  for i = 1, n do
    if r[i] ~= i * i then assert.equal(i * i, r[i], "item " .. i) end
  end
end

-- The lines of a file each task appended its item to, counted per item.
local function runs_of(path)
  local seen, lines = {}, 0
  for v in (RH.read_file(path) or ""):gmatch("[^\n]+") do
    lines = lines + 1
    seen[tonumber(v)] = (seen[tonumber(v)] or 0) + 1
  end
  return seen, lines
end

local function check_once(path, n)
  local seen, lines = runs_of(path)
  for i = 1, n do
    if seen[i] ~= 1 then assert.equal(1, seen[i], "runs of item " .. i) end
  end
  assert.equal(n, lines)
end

describe("lmp.redis_cluster", function()
  it("shard tags keep the queue's own keys for one shard and spread K over K slot ranges", function()
    assert.equal("q", RC.shard_tag("q", 0, 1))
    assert.equal("lmp:{q}:tasks", RM._shards("q", 1)[1].k.tasks)
    for _, k in ipairs({2, 3, 5}) do
      for i = 0, k - 1 do
        local tag = RC.shard_tag("jobs", i, k)
        assert.matches("^jobs:" .. i, tag)
        local s = RC.slot(tag)
        assert.is_true(s >= math.floor(i * 16384 / k) and s < math.floor((i + 1) * 16384 / k), tag)
        assert.equal(s, RC.slot("lmp:{" .. tag .. "}:tasks"))
      end
    end
  end)

  it("refuses a bad shard count", function()
    for _, bad in ipairs({0, 1.5, 257, "3"}) do
      local ok, e = pcall(lmp.RedisPool, {url = "redis://127.0.0.1:1", shards = bad})
      assert.is_false(ok)
      assert.matches("shards must be an integer from 1 to 256", tostring(e), 1, true)
    end
  end)
end)

describe("lmp.RedisPool with shards on one Redis", function()
  local srv, workers, tmp = nil, {}, nil
  setup(function() srv = RH.start() end)
  teardown(function() srv:stop() end)
  after_each(function()
    for _, w in ipairs(workers) do RH.stop_worker(w) end
    workers = {}
    if tmp then os.remove(tmp) tmp = nil end
  end)

  it("spreads a map over 3 streams; workers learn the shard count from the queue", function()
    local pool = lmp.RedisPool{url = srv.url, queue = "sq", shards = 3}
    for i = 1, 2 do workers[i] = RH.worker(srv, "sq") end
    tmp = os.tmpname()
    local path = tmp
    local r = pool:map_async(function(x)
      local f = io.open(path, "a") f:write(x, "\n") f:close()
      return x * x
    end, range(600))
    check_squares(r:get(60), 600)
    check_once(path, 600)
    local c = srv:client()
    for _, sh in ipairs(RM._shards("sq", 3)) do
      assert.equal(1, c:call("EXISTS", sh.k.tasks))        -- each shard got tasks
    end
    assert.equal(0, c:call("EXISTS", "lmp:{sq}:tasks"))    -- not the unsharded stream
    assert.equal("3", c:call("HGET", "lmp:{sq}:cfg", "shards"))
    local s = pool:stats()
    assert.equal(3, #s.shards)
    assert.equal(0, s.waiting)
    assert.equal(0, s.pending)
    assert.equal(2, #s.workers)
    for i, sh in ipairs(s.shards) do assert.equal(RC.shard_tag("sq", i - 1, 3), sh.name) end
    c:close()
    pool:terminate()
  end)

  it("keeps one shard's keys as before, and reattaches to a task of any shard", function()
    local p1 = lmp.RedisPool{url = srv.url, queue = "one"}
    assert.equal(1, #p1:stats().shards)
    p1:apply_async(function() return 1 end)
    local c = srv:client()
    assert.equal(1, c:call("XLEN", "lmp:{one}:tasks"))
    p1:terminate()
    local pool = lmp.RedisPool{url = srv.url, queue = "rq", shards = 3}
    local ids = {}
    for i = 1, 4 do ids[i] = pool:apply_async(function(x) return x + 100 end, {i}).id end
    pool:terminate()                            -- the caller goes away
    workers[1] = RH.worker(srv, "rq", {args = "--shards 3"})
    local p2 = lmp.RedisPool{url = srv.url, queue = "rq", shards = 3}
    for i = 1, 4 do assert.equal(i + 100, p2:result(ids[i]):get(20)) end
    p2:terminate()
    c:close()
  end)

  it("dead-letters per shard; dead_letters() and stats() read every shard", function()
    local pool = lmp.RedisPool{url = srv.url, queue = "dq", shards = 3, retry_errors = true,
      max_retries = 1}
    workers[1] = RH.worker(srv, "dq")
    local rs = {}
    for i = 1, 3 do rs[i] = pool:apply_async(function(x) error("boom " .. x) end, {i}) end
    for i = 1, 3 do
      local ok, e = pcall(rs[i].get, rs[i], 20)
      assert.is_false(ok)
      assert.is_true(e.dead_letter)
      assert.matches("boom " .. i, e.message, 1, true)
    end
    local dl = pool:dead_letters()
    assert.equal(3, #dl)
    local tasks = {}
    for _, d in ipairs(dl) do tasks[d.task] = true end
    for i = 1, 3 do assert.is_true(tasks[rs[i].id]) end
    local s = pool:stats()
    assert.equal(3, s.dead)
    for _, sh in ipairs(s.shards) do assert.equal(1, sh.dead) end
    pool:terminate()
  end)
end)

describe("lmp.RedisPool on a Redis Cluster", function()
  local cluster, workers, tmp = nil, {}, nil
  setup(function() cluster = CH.start(3) end)
  teardown(function() if cluster then cluster:stop() end end)
  after_each(function()
    for _, w in ipairs(workers) do RH.stop_worker(w) end
    workers = {}
    if tmp then os.remove(tmp) tmp = nil end
  end)

  it("computes the slots Redis computes, and puts 3 shards on 3 masters", function()
    for _, key in ipairs({"foo", "lmp:{jobs}:tasks", "{user1000}.following", "a{}b", "x{", "{x}}"}) do
      assert.equal(cluster:call(cluster.nodes[1], "CLUSTER", "KEYSLOT", key), RC.slot(key), key)
    end
    local owners = {}
    for i = 0, 2 do
      local node = cluster:owner(RC.slot(RC.shard_tag("q", i, 3)))
      assert.is_nil(owners[node])
      owners[node] = true
    end
  end)

  it("reads the slot map again and retries when a node's connection fails", function()
    local cl = RC.client(cluster.url, {timeout = 5, reconnect_timeout = 10})
    for i = 1, 30 do cl:call("SET", "k" .. i, i) end      -- connections to every master
    local before = cl.refreshes
    for _, node in ipairs(cluster.nodes) do
      cluster:call(node, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    end
    for i = 1, 30 do assert.equal(tostring(i), cl:call("GET", "k" .. i)) end
    assert.is_true(cl.reconnects >= 1)
    assert.is_true(cl.refreshes > before)
    local r = cl:pipeline({{"GET", "k1"}, {"GET", "k2"}, {"GET", "k3"}})
    assert.same({"1", "2", "3"}, r)
    cl:close()
  end)

  it("refuses cluster = true on a Redis that is not a cluster", function()
    local srv = RH.start()
    local ok, e = pcall(lmp.RedisPool, {url = srv.url, queue = "q", cluster = true})
    srv:stop()
    assert.is_false(ok)
    assert.matches("is not a Redis Cluster node", tostring(e), 1, true)
  end)

  it("keeps an unsharded queue's keys on the node of its tag", function()
    local pool = lmp.RedisPool{url = cluster.url, queue = "u", cluster = true}
    workers[1] = CH.worker(cluster.url, "u")
    assert.equal(42, pool:apply(function(x) return x * 2 end, {21}))
    local node = cluster:owner(RC.slot("u"))
    assert.equal(1, cluster:call(node, "EXISTS", "lmp:{u}:cfg"))
    assert.equal(1, #pool:stats().shards)
    pool:terminate()
  end)

  it("runs 2,000 tasks over 3 shards on 3 masters with two workers", function()
    local pool = lmp.RedisPool{url = cluster.url, queue = "q", cluster = true, shards = 3}
    for i = 1, 2 do workers[i] = CH.worker(cluster.url, "q") end
    check_squares(pool:map(function(x) return x * x end, range(2000)), 2000)
    assert.equal(7, pool:apply(function(a, b) return a + b end, {3, 4}))
    local s = pool:stats()
    assert.equal(3, #s.shards)
    assert.equal(0, s.waiting)
    local out = RH.sh(string.format("%s workers --cluster --redis %s --queue q 2>&1",
      H.shell_quote(H.lmp_bin), cluster.url))
    assert.matches("queue q: 0 waiting, 0 pending", out, 1, true)
    assert.matches("2 live worker(s)", out, 1, true)
    assert.matches("shard {" .. RC.shard_tag("q", 2, 3) .. "}", out, 1, true)
    pool:terminate()
  end)

  it("loses nothing and runs nothing twice while a shard's slot migrates", function()
    local pool = lmp.RedisPool{url = cluster.url, queue = "m", cluster = true, shards = 3}
    for i = 1, 2 do workers[i] = CH.worker(cluster.url, "m") end
    tmp = os.tmpname()
    local path = tmp
    local n = 2000
    local r = pool:map_async(function(x)
      local f = io.open(path, "a") f:write(x, "\n") f:close()
      return x * x
    end, range(n))
    -- once the map is under way, move shard 1's slot to another master
    assert.is_true(H.wait_until(function()
      pool:poll(0)
      return select(2, runs_of(path)) >= 200
    end, 30, 0.01))
    local slot = RC.slot(RC.shard_tag("m", 1, 3))
    local from = cluster:owner(slot)
    local to = cluster.nodes[from == cluster.nodes[1] and 2 or 1]
    local moved = cluster:migrate(slot, to)
    assert.is_true(moved >= 1)                   -- at least the stream moved
    check_squares(r:get(60), n)
    assert.equal(to, cluster:owner(slot))
    check_once(path, n)
    assert.is_true(pool.cl.refreshes >= 2)      -- MOVED made it read the map again
    pool:terminate()
  end)
end)
