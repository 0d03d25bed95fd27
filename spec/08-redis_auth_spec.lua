-- Signed tasks and results (issue 20): with an authkey, write access to
-- Redis is not code execution on every worker, and a forged result is
-- never decoded. Each test against a redis-server of its own; no spec
-- opens a connection to anything but 127.0.0.1.
local lmp = require "lmp"
local H = require "helper"
local range = H.range
local err_of = H.err_of
local RH = require "helpers.redis"
local RM = require "lmp.redis"
local RA = require "lmp.redis_auth"
local R = require "lmp.c.redis"

local KEY = string.rep("k", 40)
local OLD = string.rep("o", 32)
local WRONG = string.rep("w", 48)

local function key_file(s)
  local p = os.tmpname()
  local f = assert(io.open(p, "wb"))
  f:write(s, "\n")
  f:close()
  return p
end

local function exists(p)
  local f = io.open(p)
  if f then f:close() return true end
  return false
end

local function dead(cl, queue)
  local out = {}
  for _, e in ipairs(cl:call("XRANGE", RM._keys(queue).dead, "-", "+")) do
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    out[#out + 1] = f
  end
  return out
end

describe("signed Redis tasks", function()
  local srv, workers, files, pools = nil, {}, {}, {}
  local function worker(queue, keys, extra)
    local args = {}
    for _, k in ipairs(keys or {}) do
      local p = key_file(k)
      files[#files + 1] = p
      args[#args + 1] = "--authkey-file " .. H.shell_quote(p)
    end
    local w = RH.worker(srv, queue, {concurrency = 2, args = table.concat(args, " ") .. " " .. (extra or "")})
    workers[#workers + 1] = w
    return w
  end
  local function pool(o)
    o.url = o.url or srv.url
    local p = lmp.RedisPool(o)
    pools[#pools + 1] = p
    return p
  end
  setup(function() srv = RH.start() end)
  teardown(function() srv:stop() end)
  after_each(function()
    for _, p in ipairs(pools) do pcall(p.terminate, p) end
    for _, w in ipairs(workers) do RH.stop_worker(w) end
    for _, p in ipairs(files) do os.remove(p) end
    workers, files, pools = {}, {}, {}
  end)

  it("1. a keyed worker and a RedisPool with the same key map 500 tasks right", function()
    worker("s1", {KEY})
    local p = pool{queue = "s1", authkey = KEY}
    local r = p:map_async(function(x) return x * 3 end, range(500)):get(60)
    assert.equal(500, #r)
    for i = 1, 500 do assert.equal(3 * i, r[i]) end
    assert.same({}, dead(srv:client(), "s1"))
  end)

  it("2. unsigned and wrongly signed tasks are dead-lettered with auth, never run", function()
    local mark = os.tmpname()
    os.remove(mark)
    local function touch() local f = io.open(mark, "w") f:write("ran") f:close() return 1 end
    worker("s2", {KEY})
    local unsigned = pool{queue = "s2", insecure = true}
    local wrong = pool{queue = "s2", authkey = WRONG}
    local a = unsigned:apply_async(touch)
    local b = wrong:apply_async(touch)
    for _, job in ipairs({a, b}) do
      local e = err_of(job.get, job, 30)
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.is_true(e.dead_letter)
    end
    local d = dead(srv:client(), "s2")
    assert.equal(2, #d)
    for _, f in ipairs(d) do
      assert.equal("auth", f.kind)
      assert.matches("refused", f.error)
    end
    -- the keyed pool of the same queue still works, and nothing ran the marker
    local ok = pool{queue = "s2", authkey = KEY}:apply(function() return "fine" end)
    assert.equal("fine", ok)
    assert.is_false(exists(mark))
  end)

  it("3. an entry with one byte of its arguments flipped is refused the same way", function()
    local cl = srv:client()
    local p = pool{queue = "s3", authkey = KEY}
    local job = p:apply_async(function(x) return x end, {"abcdef"})
    local k = RM._keys("s3")
    local e = cl:call("XRANGE", k.tasks, "-", "+")[1]
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == "a" then
        local a = f[i + 1]
        local at = a:find("abcdef", 1, true)
        f[i + 1] = a:sub(1, at - 1) .. "X" .. a:sub(at + 1)
      end
    end
    cl:call("XDEL", k.tasks, e[1])
    cl:call("XADD", k.tasks, "*", (table.unpack or unpack)(f))
    worker("s3", {KEY})
    local err = err_of(job.get, job, 30)
    assert.is_true(lmp.is_error(err, "auth"), tostring(err))
    local d = dead(cl, "s3")
    assert.equal(1, #d)
    assert.equal("auth", d[1].kind)
    assert.matches("signature does not match", d[1].error, 1, true)
    -- the dead letter keeps the entry's fields, signature included
    assert.equal(32, #d[1].s)
  end)

  it("4. a forged result raises auth and is not decoded", function()
    local cl = srv:client()
    local p = pool{queue = "s4", authkey = KEY}       -- no worker: nothing runs
    local k = RM._keys("s4")
    local forged = {
      "O[\"not json",                                   -- unsigned: refused unread
      "S" .. string.rep("\0", 32) .. "O[1]",            -- a signature of nobody
      "S" .. RA.sign_result(RA.keyring(WRONG).sign, "s4", "x", "O[1]"):sub(2),  -- other key
      "X1\n" .. string.rep("\0", 32) .. "{}",           -- a dead letter's error
    }
    for _, v in ipairs(forged) do
      local job = p:apply_async(function() return 1 end)
      local caller = RM._caller_of(job.id)
      cl:call("HSET", k.prefix .. "r:" .. caller, job.id, v)
      cl:call("RPUSH", k.prefix .. "n:" .. caller, job.id)
      local e = err_of(job.get, job, 10)
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("not decoded", e.message, 1, true)
    end
  end)

  it("4b. a keyed caller refuses what a worker without the key returns", function()
    worker("s4b")
    local p = pool{queue = "s4b", authkey = KEY}
    local e = err_of(p.apply, p, function() return 1 end)
    assert.is_true(lmp.is_error(e, "auth"), tostring(e))
    assert.matches("not signed", e.message, 1, true)
  end)

  it("4c. without a key, results are decoded with functions refused", function()
    local cl = srv:client()
    local p = pool{queue = "s4c"}
    local k = RM._keys("s4c")
    local job = p:apply_async(function() return 1 end)
    local caller = RM._caller_of(job.id)
    cl:call("HSET", k.prefix .. "r:" .. caller, job.id, "O" .. lmp.pickle.dumps({function() return 1 end}))
    cl:call("RPUSH", k.prefix .. "n:" .. caller, job.id)
    local e = err_of(job.get, job, 10)
    assert.is_true(lmp.is_error(e, "pickle"), tostring(e))
    assert.matches("functions refused", e.message, 1, true)
  end)

  it("5. key rotation: workers with {new, old}, callers moving from old to new", function()
    worker("s5", {KEY, OLD})
    worker("s5", {KEY, OLD})
    local old = pool{queue = "s5", authkey = OLD}
    local both = pool{queue = "s5", authkey = {KEY, OLD}}
    local new = pool{queue = "s5", authkey = KEY}
    local jobs = {}
    for round = 1, 3 do
      for i, p in ipairs({old, both, new}) do
        jobs[#jobs + 1] = {p:map_async(function(x) return x + 1 end, range(40), 4), round, i}
      end
    end
    for _, j in ipairs(jobs) do
      local r = j[1]:get(60)
      assert.equal(40, #r)
      assert.equal(41, r[40])
    end
    assert.same({}, dead(srv:client(), "s5"))
    -- a caller on a key the workers dropped is refused
    local e = err_of(pool{queue = "s5", authkey = WRONG}.apply, pools[#pools], function() end)
    assert.is_true(lmp.is_error(e, "auth"))
  end)

  it("7. LMP_AUTHKEY_FILE gives a worker its keys (FILE:FILE, the first signs)", function()
    local kf, of = key_file(KEY), key_file(OLD)
    files[#files + 1] = kf
    files[#files + 1] = of
    local log = os.tmpname()
    local pid = tonumber(H.sh(string.format(
      "(LMP_AUTHKEY_FILE=%s exec %s worker --redis %s --queue s7 --concurrency 1 >%s 2>&1 </dev/null) & echo $!",
      H.shell_quote(kf .. ":" .. of), H.shell_quote(H.lmp_bin), srv.url, log)).out)
    workers[#workers + 1] = {pid = pid, log = log}
    assert.equal(7, pool{queue = "s7", authkey = OLD}:apply(function() return 7 end))
    assert.equal(8, pool{queue = "s7", authkey = KEY}:apply(function() return 8 end))
    local e = err_of(pool{queue = "s7", insecure = true}.apply, pools[#pools], function() end)
    assert.is_true(lmp.is_error(e, "auth"))
  end)

  it("0. a MAC is HMAC-SHA256 over the length-framed parts, as Python's hmac computes it", function()
    -- the reference: Python's hmac module (RFC 2104), over each part
    -- framed by its length in 8 big-endian bytes; keys of 32, 64 and
    -- 100 bytes (one longer than SHA-256's block is hashed first), and
    -- parts from empty to longer than lmp's 512-byte gathering buffer
    local A = require "lmp.c.auth"
    local unpack = table.unpack or unpack
    local cases = {
      {string.rep("k", 32), {"q", "t1", "", "x"}},
      {string.rep("\255", 64), {string.rep("a", 600), "b"}},
      {string.rep("z", 100), {"queue", string.rep("\0", 300), string.rep("c", 200), "[1]"}},
    }
    for i, c in ipairs(cases) do
      local key, parts = c[1], c[2]
      local hexparts = {}
      for j, p in ipairs(parts) do hexparts[j] = "'" .. (p:gsub(".", function(ch)
        return string.format("%02x", ch:byte()) end)) .. "'" end
      local hexkey = key:gsub(".", function(ch) return string.format("%02x", ch:byte()) end)
      local py = string.format([=[python3 -c "import hmac,hashlib,struct
k=bytes.fromhex('%s'); ps=[bytes.fromhex(x) for x in [%s]]
print(hmac.new(k, b''.join(struct.pack('>Q', len(p)) + p for p in ps), hashlib.sha256).hexdigest())"]=],
        hexkey, table.concat(hexparts, ","))
      local want = RH.sh(py):gsub("%s+$", "")
      assert.equal(64, #want, "python3 answered: " .. want)
      local got = A.mac(A.key(key), unpack(parts))
      assert.equal(want, (got:gsub(".", function(ch) return string.format("%02x", ch:byte()) end)), "case " .. i)
      local raw = A.mac(key, unpack(parts))
      assert.equal(got, raw, "case " .. i .. " (a key string)")
    end
  end)

  describe("6. keys and the policy", function()
    local function parsed(url) return RA.is_local(R.parse_url(url)) end

    it("loopback and Unix sockets are local; every other host is not", function()
      for _, u in ipairs({"redis://127.0.0.1:6379", "redis://127.8.9.10", "redis://localhost:1",
                          "redis://LOCALHOST", "redis://[::1]:6379", "unix:///tmp/r.sock"}) do
        assert.is_true(parsed(u), u)
      end
      for _, u in ipairs({"redis://10.0.0.1:6379", "redis://192.168.1.2", "redis://128.0.0.1",
                          "redis://example.org", "redis://127.0.0.1.evil.example",
                          "redis://127.evil.example", "redis://[::2]:6379", "redis://0.0.0.0",
                          "redis://[fe80::1]", "redis://127.0.0.300"}) do
        assert.is_false(parsed(u), u)
      end
    end)

    it("a RedisPool on a remote host without a key refuses before connecting", function()
      local tried = 0
      local connect = R.connect
      R.connect = function() tried = tried + 1 error("a connection was attempted", 0) end
      local ok, e = pcall(lmp.RedisPool, {url = "redis://10.11.12.13:6379", queue = "q"})
      local ok2, e2 = pcall(lmp.RedisPool, {url = "redis://redis.example.org", queue = "q",
        authkey = KEY})
      local ok3, e3 = pcall(lmp.RedisPool, {url = "redis://10.11.12.13:6379", queue = "q",
        insecure = true})
      R.connect = connect
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("authkey", e.message, 1, true)
      assert.matches("insecure", e.message, 1, true)
      -- with a key, or insecure, the policy lets it connect (here: refused by the stub)
      assert.is_false(ok2)
      assert.equal("a connection was attempted", e2)
      assert.is_false(ok3)
      assert.equal("a connection was attempted", e3)
      assert.equal(2, tried)
    end)

    it("lmp worker on a remote host without a key exits naming --authkey-file and --insecure", function()
      local r = H.sh(H.shell_quote(H.lmp_bin) .. " worker --redis redis://10.11.12.13:6379 --queue q --timeout 0.2")
      assert.equal(1, r.code)
      assert.matches("authkey", r.err, 1, true)
      assert.matches("--insecure", r.err, 1, true)
      assert.matches("not on loopback", r.err, 1, true)
    end)

    it("short, missing and malformed keys are refused clearly", function()
      local e = err_of(lmp.RedisPool, {url = srv.url, queue = "q", authkey = "short"})
      assert.matches("at least 32 bytes", tostring(e), 1, true)
      e = err_of(lmp.RedisPool, {url = srv.url, queue = "q", authkey = {KEY, "x"}})
      assert.matches("authkey #2", tostring(e), 1, true)
      e = err_of(lmp.RedisPool, {url = srv.url, queue = "q", authkey_file = "/nonexistent/key"})
      assert.matches("cannot read the authkey file", tostring(e), 1, true)
      local short = key_file("too short")
      files[#files + 1] = short
      local r = H.sh(H.shell_quote(H.lmp_bin) .. " worker --redis " .. srv.url
        .. " --queue q --authkey-file " .. H.shell_quote(short))
      assert.equal(2, r.code)
      assert.matches("at least 32 bytes", r.err, 1, true)
    end)

    it("a key file drops one trailing newline; the same key signs the same", function()
      local p = key_file(KEY)
      files[#files + 1] = p
      assert.equal(KEY, RA.read_key_file(p))
      local a, b = RA.keyring(KEY), RA.keyring(nil, p)
      assert.equal(RA.sign_task(a, "q", "t:1", "h", "f", "a"), RA.sign_task(b, "q", "t:1", "h", "f", "a"))
      -- every field and the queue are covered; parts cannot be re-cut
      local s = RA.sign_task(a, "q", "t:1", "h", "f", "a")
      assert.is_truthy(RA.check_task(a, "q", "t:1", "h", "f", "a", s))
      for _, v in ipairs({{"q2", "t:1", "h", "f", "a"}, {"q", "t:2", "h", "f", "a"},
                          {"q", "t:1", "h2", "f", "a"}, {"q", "t:1", "h", "f2", "a"},
                          {"q", "t:1", "h", "f", "a2"}, {"q", "t:1", "hf", "", "a"}}) do
        assert.is_nil(RA.check_task(a, v[1], v[2], v[3], v[4], v[5], s))
      end
      -- a task key does not sign results
      assert.is_nil(RA.open_result(a, "q", "t:1", "S" .. s .. "O[1]"))
    end)
  end)
end)
