-- lmp.set_codec, lmp.get_codec and LMP_CODEC: one switch for the default
-- codec of Pool, ThreadPool, Queue, JoinableQueue, SimpleQueue, Pipe,
-- Connection and RedisPool. Each case runs a script under the lmp runtime
-- (a fresh process, so the switch and the environment are exactly what the
-- case says); every blocking call in those scripts has a timeout, and
-- H.run_lmp bounds each script.
local H = require "helper"

-- Prelude of every script: `wire()` tells which codec the pickles that
-- reached this process through the pool's result path were written in
-- ("binary", "json", or both), installed before lmp.pool is loaded (it
-- keeps pickle.loads and loads_into as upvalues).
local PRELUDE = [==[
assert(not package.loaded["lmp.pool"], "lmp.pool loaded too early for the probe")
local pickle = require "lmp.pickle"
local seen = {}
for _, name in ipairs{"loads", "loads_into"} do
  local f = pickle[name]
  pickle[name] = function(s, ...)
    seen[s:byte(1) == 0xB1 and "binary" or "json"] = true
    return f(s, ...)
  end
end
function wire()
  local out = {}
  for k in pairs(seen) do out[#out + 1] = k end
  table.sort(out)
  seen = {}
  return table.concat(out, "+")
end
function out(k, v) io.write(k, "=", tostring(v), "\n") io.flush() end
function codecs(explicit)
  local o = explicit and {codec = explicit} or nil
  local C = require "lmp.c.pipe"
  local a, b = lmp.Pipe(o)
  local fd = C.socketpair()
  local conn = lmp.Connection(fd, o)
  local t = {
    Pool = lmp.Pool{processes = 1, codec = explicit},
    ThreadPool = lmp.ThreadPool{threads = 1, codec = explicit},
    Queue = lmp.Queue(0, o), JoinableQueue = lmp.JoinableQueue(0, o),
    SimpleQueue = lmp.SimpleQueue(o), Pipe = a, Connection = conn,
  }
  local r = {}
  for _, k in ipairs{"Pool", "ThreadPool", "Queue", "JoinableQueue", "SimpleQueue",
                     "Pipe", "Connection"} do
    r[#r + 1] = k .. ":" .. t[k]:codec()
  end
  t.Pool:terminate(); t.ThreadPool:terminate()
  a:close(); b:close(); conn:close()
  return table.concat(r, " ")
end
]==]

local UNSET = "env -u LMP_CODEC"

-- Runs PRELUDE .. code with env (default: LMP_CODEC unset); returns a
-- table of the key=value lines it printed, and the run (fails the test,
-- showing stderr, when the script did not exit 0).
local function run(code, env)
  local r = H.run_lmp(PRELUDE .. code, {env = env or UNSET, timeout = 60})
  assert(r.code == 0, "script failed (" .. tostring(r.code) .. "):\n" .. r.out .. r.err)
  local kv = {}
  for k, v in r.out:gmatch("([%w_]+)=([^\n]*)") do kv[k] = v end
  return kv, r
end

local function all(codec, threadpool)
  return string.format("Pool:%s ThreadPool:%s Queue:%s JoinableQueue:%s SimpleQueue:%s "
    .. "Pipe:%s Connection:%s", codec, threadpool or codec, codec, codec, codec, codec, codec)
end

describe("the default codec", function()
  it("is JSON everywhere (ThreadPool: binary) when nothing is set", function()
    local kv = run([[
      local c, set = lmp.get_codec()
      out("get", c .. " " .. tostring(set))
      out("objects", codecs())
      out("dumps", pickle.dumps({1, 2}))
    ]])
    assert.equal("json false", kv.get)
    assert.equal(all("json", "binary"), kv.objects)
    assert.equal("[1,2]", kv.dumps)
  end)

  it("follows lmp.set_codec for every class, ThreadPool included; codec = still wins", function()
    local kv = run([[
      out("before", codecs())
      lmp.set_codec("binary")
      local c, set = lmp.get_codec()
      out("get", c .. " " .. tostring(set))
      out("after", codecs())
      out("explicit", codecs("json"))
      lmp.set_codec("json")
      out("json", codecs())
      out("explicit2", codecs("binary"))
      out("dumps", pickle.dumps({1, 2}))      -- pickle.dumps' own default stays JSON
    ]])
    assert.equal(all("json", "binary"), kv.before)
    assert.equal("binary true", kv.get)
    assert.equal(all("binary"), kv.after)
    assert.equal(all("json"), kv.explicit)
    assert.equal(all("json"), kv.json)       -- ThreadPool too, once the switch is set
    assert.equal(all("binary"), kv.explicit2)
    assert.equal("[1,2]", kv.dumps)
  end)

  it("is read from LMP_CODEC at start; set_codec overrides it", function()
    local kv = run([[
      local c, set = lmp.get_codec()
      out("get", c .. " " .. tostring(set))
      out("objects", codecs())
      out("explicit", codecs("json"))
      out("dumps", pickle.dumps({1, 2}))
      lmp.set_codec("json")
      out("after", codecs())
    ]], "LMP_CODEC=binary")
    assert.equal("binary true", kv.get)
    assert.equal(all("binary"), kv.objects)
    assert.equal(all("json"), kv.explicit)
    assert.equal("[1,2]", kv.dumps)
    assert.equal(all("json"), kv.after)

    kv = run([[
      local c, set = lmp.get_codec()
      out("get", c .. " " .. tostring(set))
      out("objects", codecs())
    ]], "LMP_CODEC=json")
    assert.equal("json true", kv.get)
    assert.equal(all("json"), kv.objects)    -- a set switch decides ThreadPool too

    kv = run([[
      local c, set = lmp.get_codec()
      out("get", c .. " " .. tostring(set))
    ]], "LMP_CODEC=")
    assert.equal("json false", kv.get)        -- empty: as if unset
  end)
end)

describe("pool workers", function()
  it("pickle their results with their pool's codec, not the process default (fork)", function()
    local kv = run([[
      local function sq(x) return x * x end
      local function try(opts)
        local p = lmp.Pool(opts)
        local r = p:map_async(sq, {1, 2, 3, 4}, 1):get(20)
        local one = p:apply_async(sq, {5}):get(20)
        assert(r[4] == 16 and one == 25)
        local w = p:codec() .. "/" .. wire()
        p:terminate()
        return w
      end
      out("unset", try{processes = 2})
      lmp.set_codec("binary")
      out("switch", try{processes = 2})
      out("explicit", try{processes = 2, codec = "json"})
      lmp.set_codec("json")
      out("explicit2", try{processes = 2, codec = "binary"})
    ]])
    assert.equal("json/json", kv.unset)
    assert.equal("binary/binary", kv.switch)
    assert.equal("json/json", kv.explicit)
    assert.equal("binary/binary", kv.explicit2)
  end)

  it("of a spawn pool follow it too", function()
    local kv = run([[
      local ctx = lmp.get_context("spawn")
      local function try(opts)
        local p = ctx.Pool(opts)
        local r = p:map_async(function(x) return x + 1 end, {1, 2, 3}, 1):get(30)
        assert(r[3] == 4)
        local w = p:codec() .. "/" .. wire()
        p:terminate()
        return w
      end
      out("env", try{processes = 1})
      out("explicit", try{processes = 1, codec = "json"})
      lmp.set_codec("json")
      out("switch", try{processes = 1})
    ]], "LMP_CODEC=binary")
    assert.equal("binary/binary", kv.env)
    assert.equal("json/json", kv.explicit)
    assert.equal("json/json", kv.switch)
  end)

  it("of a ThreadPool follow it, and their Lua states see the switch", function()
    local kv = run([[
      local function probe()
        local c, set = require("lmp").get_codec()
        return c .. " " .. tostring(set)
      end
      local function try(opts)
        local p = lmp.ThreadPool(opts)
        local r = p:map_async(function(x) return x * 2 end, {1, 2, 3}, 1):get(20)
        assert(r[3] == 6)
        local w = p:codec() .. "/" .. wire()
        local inside = p:apply_async(probe, {}):get(20)
        wire()                                    -- forget probe's result
        p:terminate()
        return w .. "/" .. inside
      end
      out("unset", try{threads = 1})
      lmp.set_codec("json")
      out("switch", try{threads = 1})
      out("explicit", try{threads = 1, codec = "binary"})
    ]])
    assert.equal("binary/binary/json false", kv.unset)
    assert.equal("json/json/json true", kv.switch)
    assert.equal("binary/binary/json true", kv.explicit)
  end)
end)

describe("children", function()
  it("started by spawn take the parent's switch (over their own LMP_CODEC)", function()
    local kv = run([[
      local function report(w)
        local lmp = require "lmp"
        local c, set = lmp.get_codec()
        local a, b = lmp.Pipe()
        local q = lmp.Queue()
        w:send(string.format("%s %s pipe:%s queue:%s", c, tostring(set), a:codec(), q:codec()))
        a:close(); b:close(); q:close(); w:close()
      end
      local function child(ctx)
        local r, w = lmp.Pipe{duplex = false, codec = "json"}
        local p = lmp.get_context(ctx).Process{target = report, args = {w}}
        p:start()
        w:close()
        local s = r:recv(30)
        assert(p:join(30) and p.exitcode == 0)
        r:close()
        return s
      end
      out("spawn_env", child("spawn"))
      lmp.set_codec("json")
      out("spawn_set", child("spawn"))
      out("fork_set", child("fork"))
      lmp.set_codec("binary")
      out("fork_set2", child("fork"))
    ]], "LMP_CODEC=binary")
    assert.equal("binary true pipe:binary queue:binary", kv.spawn_env)
    assert.equal("json true pipe:json queue:json", kv.spawn_set)
    assert.equal("json true pipe:json queue:json", kv.fork_set)
    assert.equal("binary true pipe:binary queue:binary", kv.fork_set2)
  end)

  it("given a Pipe or a Queue use the codec it was made with", function()
    local kv = run([[
      lmp.set_codec("binary")
      local r, w = lmp.Pipe{duplex = false}     -- binary: made under the switch
      local q = lmp.Queue()
      lmp.set_codec("json")                      -- what the children get
      local function child(w, q)
        local lmp = require "lmp"
        local own = lmp.Queue()
        w:send({1, 2, 3})
        q:put(string.format("%s conn:%s queue:%s own:%s",
          lmp.get_codec(), w:codec(), q:codec(), own:codec()), 10)
        own:close(); w:close()
      end
      for _, ctx in ipairs{"spawn", "fork"} do
        local p = lmp.get_context(ctx).Process{target = child, args = {w, q}}
        p:start()
        local t, payload = r:recv_frame(30)        -- the bytes the child sent
        out(ctx .. "_wire", payload:byte(1) == 0xB1 and "binary" or "json")
        out(ctx, q:get(30))
        assert(p:join(30) and p.exitcode == 0)
      end
    ]])
    for _, ctx in ipairs{"spawn", "fork"} do
      assert.equal("binary", kv[ctx .. "_wire"])
      assert.equal("json conn:binary queue:binary own:json", kv[ctx])
    end
  end)
end)

describe("bad values", function()
  it("set_codec raises an argument error for anything but 'json' or 'binary'", function()
    local kv = run([[
      for i, v in ipairs{"xml", "JSON", "", 1, true, {}} do
        local ok, e = pcall(lmp.set_codec, v)
        out("v" .. i, tostring(ok) .. " " .. tostring(e))
      end
      local ok, e = pcall(lmp.set_codec)
      out("none", tostring(ok) .. " " .. tostring(e))
      local c, set = lmp.get_codec()
      out("get", c .. " " .. tostring(set))    -- unchanged
    ]])
    for i = 1, 6 do
      assert.matches("^false bad argument #1 to 'set_codec' %(\"json\" or \"binary\" expected, got ",
        kv["v" .. i])
    end
    assert.matches('got "xml")', kv.v1, 1, true)
    assert.matches("got number)", kv.v4, 1, true)
    assert.matches("got nil)", kv.none, 1, true)
    assert.equal("json false", kv.get)
  end)

  it("LMP_CODEC with a bad value raises at the first use of the default, naming it", function()
    local kv = run([[
      out("loaded", "yes")                       -- require "lmp" itself does not raise
      out("dumps", pickle.dumps({1}))
      local C = require "lmp.c.pipe"
      local fd = C.socketpair()
      local uses = {
        get_codec = function() return lmp.get_codec() end,
        Pool = function() return lmp.Pool{processes = 1} end,
        ThreadPool = function() return lmp.ThreadPool{threads = 1} end,
        Queue = function() return lmp.Queue() end,
        JoinableQueue = function() return lmp.JoinableQueue(0, {capacity = 4096}) end,
        SimpleQueue = function() return lmp.SimpleQueue() end,
        Pipe = function() return lmp.Pipe() end,
        Connection = function() return lmp.Connection(fd) end,
        RedisPool = function() return lmp.RedisPool{url = "redis://127.0.0.1:1/0"} end,
      }
      for k, f in pairs(uses) do
        local ok, e = pcall(f)
        out(k, tostring(ok) .. " " .. tostring(e))
      end
      -- an explicit codec needs no default
      local q = lmp.Queue(0, {codec = "json"})
      local p = lmp.Pool{processes = 1, codec = "binary"}
      out("explicit", q:codec() .. " " .. p:codec())
      p:terminate()
      lmp.set_codec("binary")                    -- the program decides: fixed
      out("fixed", lmp.get_codec() .. " " .. lmp.Queue():codec())
    ]], "LMP_CODEC=yaml")
    assert.equal("yes", kv.loaded)
    assert.equal("[1]", kv.dumps)
    for _, k in ipairs{"get_codec", "Pool", "ThreadPool", "Queue", "JoinableQueue",
                       "SimpleQueue", "Pipe", "Connection", "RedisPool"} do
      assert.equal('false LMP_CODEC="yaml" is not a codec: set it to "json" or "binary", '
        .. "or unset it", kv[k], k)
    end
    assert.equal("json binary", kv.explicit)
    assert.equal("binary binary", kv.fixed)
  end)

  it("a bad LMP_CODEC reaches a spawn child as it is; an explicit codec= still raises its own error", function()
    local kv = run([[
      local r, w = lmp.Pipe{duplex = false, codec = "json"}
      local p = lmp.get_context("spawn").Process{target = function(w)
        local ok, e = pcall(require("lmp").get_codec)
        w:send(tostring(ok) .. " " .. tostring(e))
      end, args = {w}}
      p:start()
      w:close()
      out("child", r:recv(30))
      assert(p:join(30))
      local ok, e = pcall(lmp.Pool, {codec = "xml"})
      out("pool", tostring(e))
      ok, e = pcall(lmp.Queue, 0, {codec = "xml"})
      out("queue", tostring(e))
      ok, e = pcall(lmp.Pipe, {codec = "xml"})
      out("pipe", tostring(e))
    ]], "LMP_CODEC=yaml")
    assert.matches('^false LMP_CODEC="yaml" is not a codec', kv.child)
    assert.matches("codec must be 'json' or 'binary'", kv.pool, 1, true)
    assert.matches('codec must be "json" or "binary"', kv.queue, 1, true)
    assert.matches("codec must be 'json' or 'binary'", kv.pipe, 1, true)
  end)
end)

describe("RedisPool", function()
  local RH = require "helpers.redis"
  local srv
  setup(function() srv = RH.start() end)
  teardown(function() srv:stop() end)

  -- The first byte of each task's pickled arguments in the queue's stream.
  local function task_codecs(queue)
    local cl = srv:client()
    local entries = cl:call("XRANGE", "lmp:{" .. queue .. "}:tasks", "-", "+")
    local out = {}
    for _, e in ipairs(entries) do
      local f = e[2]
      for i = 1, #f, 2 do
        if f[i] == "a" then out[#out + 1] = f[i + 1]:byte(1) == 0xB1 and "binary" or "json" end
      end
    end
    cl:close()
    return table.concat(out, ",")
  end

  it("follows the switch for the tasks it queues; codec = wins", function()
    local kv = run(string.format([[
      local function submit(queue, opts)
        opts = opts or {}
        opts.url, opts.queue = %q, queue
        local rp = lmp.RedisPool(opts)
        rp:apply_async(function(x) return x + 1 end, {41})
        out(queue, rp:codec())
        rp:terminate()                          -- the task stays queued
      end
      submit("c_unset")
      lmp.set_codec("binary")
      submit("c_switch")
      submit("c_explicit", {codec = "json"})
    ]], srv.url))
    assert.equal("json", kv.c_unset)
    assert.equal("binary", kv.c_switch)
    assert.equal("json", kv.c_explicit)
    assert.equal("json", task_codecs("c_unset"))
    assert.equal("binary", task_codecs("c_switch"))
    assert.equal("json", task_codecs("c_explicit"))
  end)

  it("under LMP_CODEC=binary gets its results from an `lmp worker`", function()
    local w = RH.worker(srv, "c_run")
    local kv = run(string.format([[
      local rp = lmp.RedisPool{url = %q, queue = "c_run"}
      out("codec", rp:codec())
      out("result", rp:apply_async(function(x) return {x + 1, 0.1} end, {41}):get(30)[1])
      out("map", table.concat(rp:map_async(function(x) return x * 2 end, {1, 2, 3}):get(30), ","))
      rp:terminate()
    ]], srv.url), "LMP_CODEC=binary")
    RH.stop_worker(w)
    assert.equal("binary", kv.codec)
    assert.equal("42", kv.result)
    assert.equal("2,4,6", kv.map)
  end)
end)
