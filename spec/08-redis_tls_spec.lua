-- Redis over TLS (rediss://): certificate and name checks, client
-- certificates, deadlines and Ctrl-C during the handshake, fork, reconnect,
-- and RedisPool + `lmp worker` end to end, against TLS-only redis-servers
-- of the spec's own with a throw-away CA (spec/helpers/redis_tls.lua).
local lmp = require "lmp"
local H = require "helper"
local range = H.range
local err_of = H.err_of
local RH = require "helpers.redis"
local RT = require "helpers.redis_tls"
local RM = require "lmp.redis"
local R = require "lmp.c.redis"

local function ping(url, opts)
  local c = R.connect(url, opts)
  local r = c:call("PING")
  c:close()
  return r
end

describe("Redis over TLS", function()
  local certs, srv, msrv, workers = nil, nil, nil, {}
  local function worker(server, queue, tls, opts)
    opts = opts or {}
    opts.args = RT.cli_args(tls) .. " " .. (opts.args or "")
    local w = RH.worker(server, queue, opts)
    workers[#workers + 1] = w
    return w
  end
  -- waits for a worker to exit by itself; its log
  local function exited(w)
    assert.truthy(H.wait_until(function() return not RH.alive(w.pid) end, 20),
      "the worker did not exit")
    return RH.read_file(w.log) or ""
  end
  setup(function()
    certs = RT.certs()
    srv = RT.start(certs)                          -- --tls-auth-clients no
    msrv = RT.start(certs, {auth_clients = true})  -- clients need a certificate
  end)
  teardown(function()
    if srv then srv:stop() end
    if msrv then msrv:stop() end
    RT.remove_certs(certs)
  end)
  after_each(function()
    for _, w in ipairs(workers) do RH.stop_worker(w) end
    workers = {}
  end)

  describe("connections", function()
    it("parses rediss:// URLs like redis:// ones, with tls = true", function()
      local u = R.parse_url("rediss://us%40er:pw@[::1]:7000/3")
      assert.is_true(u.tls)
      assert.equal("::1", u.host)
      assert.equal(7000, u.port)
      assert.equal("us@er", u.user)
      assert.equal(3, u.db)
      assert.is_false(R.parse_url("redis://h").tls)
      assert.equal(6379, R.parse_url("rediss://h").port)
    end)

    it("runs commands, pipelines and large values over a verified connection", function()
      local c = R.connect(srv.url, {tls = srv.tls, timeout = 5})
      local big = string.rep("0123456789", 20000)         -- 200 KB: many records
      assert.equal("OK", c:call("SET", "tls:big", big))
      assert.equal(big, c:call("GET", "tls:big"))
      local r = c:pipeline({{"GET", "tls:big"}, {"PING"}, {"STRLEN", "tls:big"}})
      assert.equal(big, r[1])
      assert.equal("PONG", r[2])
      assert.equal(#big, r[3])
      c:close()
      -- the name checked is the URL's host (IP 127.0.0.1 in the SAN) or
      -- server_name; "localhost" is the certificate's DNS name
      assert.equal("PONG", ping((srv.url:gsub("127%.0%.0%.1", "localhost")), {tls = srv.tls}))
      assert.equal("PONG", ping(srv.url, {tls = {ca_file = certs.ca, server_name = "localhost"}}))
    end)

    it("refuses a server whose certificate does not chain to the CA: auth, naming the check", function()
      local e = err_of(ping, srv.url, {tls = {ca_file = certs.other_ca}})
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("certificate verify failed", e.message, 1, true)
      assert.matches("does not chain to ca_file '" .. certs.other_ca .. "'", e.message, 1, true)
      assert.matches(srv.url:match("//(.-)/"), e.message, 1, true)       -- names the server
      -- without ca_file: the system store, which does not hold our CA
      e = err_of(ping, srv.url, {timeout = 5})
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("does not chain to the system CA store", e.message, 1, true)
    end)

    it("refuses a server whose certificate does not carry the name: auth, naming it", function()
      local e = err_of(ping, srv.url, {tls = {ca_file = certs.ca, server_name = "wrong.example"}})
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("hostname mismatch", e.message, 1, true)
      assert.matches("does not name 'wrong.example'", e.message, 1, true)
      e = err_of(ping, srv.url, {tls = {ca_file = certs.ca, server_name = "127.0.0.2"}})
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("IP address mismatch", e.message, 1, true)
    end)

    it("checks nothing with verify = false", function()
      assert.equal("PONG", ping(srv.url, {tls = {verify = false, server_name = "wrong.example"}}))
    end)

    it("sends a client certificate to a server that requires one, and says so when missing", function()
      assert.equal("PONG", ping(msrv.url, {tls = msrv.tls}))
      local e = err_of(ping, msrv.url, {tls = srv.tls})                -- CA only
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      assert.matches("certificate required", e.message, 1, true)
      assert.matches("client certificate", e.message, 1, true)
    end)

    it("refuses bad TLS options with messages naming them", function()
      local plain = srv.url:gsub("^rediss:", "redis:")
      local e = err_of(R.connect, plain, {tls = srv.tls})
      assert.matches("use rediss:// for TLS", tostring(e), 1, true)
      e = err_of(lmp.RedisPool, {url = plain, queue = "q", tls = srv.tls})
      assert.matches("bad argument #1 to 'RedisPool' (tls options need a rediss:// URL",
        tostring(e), 1, true)
      e = err_of(lmp.RedisPool, {url = srv.url, queue = "q", tls = {cafile = "x"}})
      assert.matches("unknown tls option 'cafile'", tostring(e), 1, true)
      e = err_of(R.connect, srv.url, {tls = {verify = "no"}})
      assert.matches("tls.verify must be a boolean", tostring(e), 1, true)
      e = err_of(R.connect, srv.url, {tls = {key_file = certs.client_key}})
      assert.matches("tls.key_file needs tls.cert_file", tostring(e), 1, true)
      e = err_of(R.connect, srv.url, {tls = {ca_file = certs.dir .. "/missing.pem"}})
      assert.is_true(lmp.is_error(e, "os"), tostring(e))
      assert.matches("cannot use ca_file '" .. certs.dir .. "/missing.pem': No such file",
        e.message, 1, true)
      e = err_of(R.connect, srv.url, {tls = {cert_file = certs.client_crt, key_file = certs.server_key}})
      assert.matches("cannot use key_file '" .. certs.server_key .. "': key values mismatch",
        e.message, 1, true)
    end)

    it("times out within connect_timeout on a server that never answers the handshake", function()
      local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}   -- accepts in the kernel, never reads
      local url = string.format("rediss://127.0.0.1:%d", ls.port)
      local t0 = lmp.time()
      local e = err_of(R.connect, url, {connect_timeout = 0.3, tls = srv.tls})
      local took = lmp.time() - t0
      ls:close()
      assert.is_true(lmp.is_error(e, "timeout"), tostring(e))
      assert.matches("no TLS handshake in time", e.message, 1, true)
      assert.is_true(took >= 0.29 and took < 5, "took " .. took)
    end)

    it("is interrupted by Ctrl-C during the handshake", function()
      local r = H.run_lmp(string.format([[
        local R = require "lmp.c.redis"
        local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}
        os.execute("(sleep 0.3; kill -INT " .. lmp.current_process().pid .. ") &")
        local t0 = lmp.time()
        local ok, e = pcall(R.connect, "rediss://127.0.0.1:" .. ls.port,
          {connect_timeout = 30, tls = {ca_file = %q}})
        io.write(tostring(lmp.is_error(e, "interrupted")), " ", tostring(lmp.time() - t0 < 10), "\n")
      ]], certs.ca), {timeout = 40})
      assert.equal(0, r.code, r.err)
      assert.equal("true true", r.out:match("[^\n]+"))
    end)

    it("raises closed in a forked child, and the parent's session survives the child", function()
      local r = H.run_lmp(string.format([[
        local R = require "lmp.c.redis"
        local c = R.connect(%q, {tls = {ca_file = %q}})
        local P = require "lmp.process"
        local pid = P._fork()
        if pid == 0 then
          local ok, e = pcall(c.call, c, "PING")
          io.write(tostring(ok), " ", tostring(e and e.kind), "\n")
          c:close()                    -- frees the child's copy, writes nothing
          io.stdout:flush()
          P._exit(0)
        end
        for _ = 1, 1000 do if P._status(pid) ~= false then break end lmp.sleep(0.01) end
        io.write(c:call("PING"), " ", tostring(c:call("ECHO", string.rep("x", 50000)) == string.rep("x", 50000)), "\n")
      ]], srv.url, certs.ca), {timeout = 20})
      assert.equal(0, r.code, r.err)
      assert.matches("false closed", r.out, 1, true)
      assert.matches("PONG true", r.out, 1, true)
    end)

    it("reconnects with a new handshake after the server drops it", function()
      local cl = srv:client()
      assert.equal("PONG", cl:call("PING"))
      local killer = R.connect(srv.url, {tls = srv.tls})
      assert.is_true(killer:call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1)
      killer:close()
      assert.equal("PONG", cl:call("PING"))
      assert.equal(1, cl.reconnects)
      cl:close()
      local c = R.connect(srv.url, {tls = srv.tls})
      c:disconnect()
      c:reconnect(5)
      assert.equal("PONG", c:call("PING"))
      c:close()
    end)

    it("wakes a fileno() wait for a reply that spans many records (no bytes hidden in OpenSSL)", function()
      local c = R.connect(srv.url, {tls = srv.tls})
      local w = R.connect(srv.url, {tls = srv.tls})
      local big = string.rep("abcdefgh", 40000)          -- 320 KB
      c:send("BLPOP", "tls:list", 10)                     -- as the worker's XREADGROUP BLOCK
      assert.is_false(c:recv(0))
      w:call("RPUSH", "tls:list", big)
      local got, reply
      local deadline = lmp.time() + 10
      repeat                                             -- the worker's loop: wait, recv(0)
        R.wait({c:fileno()}, math.max(0, deadline - lmp.time()))
        got, reply = c:recv(0)
      until got or lmp.time() > deadline
      assert.is_true(got)
      assert.equal(big, reply[2])
      c:close()
      w:close()
    end)
  end)

  describe("RedisPool and lmp worker", function()
    it("runs a map through two workers over TLS", function()
      worker(srv, "tmap", srv.tls, {concurrency = 1})
      worker(srv, "tmap", srv.tls, {concurrency = 1})
      local pool = lmp.RedisPool{url = srv.url, queue = "tmap", tls = srv.tls}
      -- both are up (registered over TLS) before the work starts
      assert.truthy(H.wait_until(function() return #pool:stats().workers == 2 end, 20, 0.02))
      local r = pool:map(function(x) return x * 3 end, range(40))
      pool:terminate()
      assert.equal(40, #r)
      for i = 1, 40 do assert.equal(3 * i, r[i]) end
    end)

    it("runs a map through two workers with client certificates", function()
      worker(msrv, "tmapc", msrv.tls, {concurrency = 1})
      worker(msrv, "tmapc", msrv.tls, {concurrency = 1})
      local pool = lmp.RedisPool{url = msrv.url, queue = "tmapc", tls = msrv.tls}
      assert.truthy(H.wait_until(function() return #pool:stats().workers == 2 end, 20, 0.02))
      local r = pool:map(function(x) return x + 100 end, range(30))
      pool:terminate()
      assert.equal(30, #r)
      for i = 1, 30 do assert.equal(100 + i, r[i]) end
    end)

    it("stops a misconfigured worker with the failed check named, and loses no task", function()
      local pool = lmp.RedisPool{url = msrv.url, queue = "tkeep", tls = msrv.tls}
      local ar = pool:apply_async(function(x) return x * 2 end, {21})
      local cases = {
        {{ca_file = certs.other_ca, cert_file = certs.client_crt, key_file = certs.client_key},
         "does not chain to ca_file"},
        {{ca_file = certs.ca, server_name = "wrong.example", cert_file = certs.client_crt,
          key_file = certs.client_key}, "does not name 'wrong.example'"},
        {{ca_file = certs.ca}, "certificate required"},
      }
      for _, case in ipairs(cases) do
        local log = exited(worker(msrv, "tkeep", case[1]))
        assert.matches("lmp worker: auth: ", log, 1, true)
        assert.matches(case[2], log, 1, true)
      end
      assert.equal(1, pool:stats().waiting)                        -- still queued
      worker(msrv, "tkeep", msrv.tls)
      assert.equal(42, ar:get(20))
      pool:terminate()
    end)

    it("lists workers over TLS, and refuses --tls-* with a redis:// URL", function()
      local r = H.sh(string.format("%s workers --redis %s --queue tlist %s", H.shell_quote(H.lmp_bin),
        msrv.url, RT.cli_args(msrv.tls)))
      assert.equal(0, r.code, r.err)
      assert.matches("queue tlist: 0 waiting", r.out, 1, true)
      r = H.sh(string.format("%s worker --redis %s --queue q --tls-ca %s", H.shell_quote(H.lmp_bin),
        srv.url:gsub("^rediss:", "redis:"), H.shell_quote(certs.ca)))
      assert.equal(2, r.code, r.err)
      assert.matches("need a rediss:// URL", r.err, 1, true)
    end)

    it("warns once that verify = false checks nothing", function()
      local r = H.run_lmp(string.format([[
        local RM = require "lmp.redis"
        for _ = 1, 2 do RM.client(%q, {tls = {verify = false}}):close() end
      ]], srv.url), {timeout = 20})
      assert.equal(0, r.code, r.err)
      local _, n = r.err:gsub("without certificate verification", "")
      assert.equal(1, n, r.err)
    end)
  end)
end)
