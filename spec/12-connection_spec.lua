-- lmp.connection: Listener and Client (Python's multiprocessing.connection)
-- over TCP loopback and Unix sockets, with and without the authkey
-- handshake. Where CPython's Lib/test/_test_multiprocessing.py has a test
-- (_TestListener, _TestListenerClient), the `it` names it.
local lmp = require "lmp"
local H = require "helper"
local err_of = H.err_of
local CF = require "helpers.conformance"
local L = lmp.connection
local S = require "lmp.socket"

local unpack = table.unpack or unpack
local KEY = "spec-secret"

local function cleanups() return CF.cleanups(finally) end
local reap = CF.reap

local function exists(path)
  return os.rename(path, path) ~= nil
end

local function tmp_path()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".sock"
end

-- A child process running fn(args...); what it returns (or raises) comes
-- back through a pipe: result(p) -> ok, value.
local function child(fn, ...)
  local r, w = lmp.Pipe{duplex = false}
  local p = lmp.Process{args = {w, ...}, target = function(out, ...)
    local res = {pcall(fn, ...)}
    if not res[1] then
      local e = res[2]
      res[2] = {kind = lmp.is_error(e) and e.kind or "lua", message = tostring(e)}
    end
    out:send({res[1], res[2]})
  end}
  p:start()
  w:close()
  p._out = r
  return p
end

local function result(p, timeout)
  local v = p._out:recv(timeout or 20)
  p._out:close()
  assert.is_true(p:join(10))
  return v[1], v[2]
end

describe("lmp.connection", function()
  it("is require('lmp').connection, with Listener, Client and wait", function()
    assert.equal(require("lmp.connection"), lmp.connection)
    assert.equal("function", type(L.Listener))
    assert.equal("function", type(L.Client))
    assert.equal(lmp.wait, L.wait)
    assert.equal(lmp.as_completed, L.as_completed)
  end)

  for _, family in ipairs({"tcp", "unix"}) do
    local function new_listener(o)
      o = o or {}
      if family == "unix" then o.address = tmp_path() end
      return L.Listener(o)
    end

    it("_TestListenerClient.test_listener_client: a child's Client sends, accept receives (" .. family .. ")", function()
      local defer = cleanups()
      local l = new_listener()
      defer(function() l:close() end)
      local p = child(function(addr)
        local c = L.Client(addr, {timeout = 10})
        c:send("hello")
        c:close()
        return true
      end, l.address)
      defer(function() reap(p) end)
      local conn = l:accept(10)
      assert.equal("hello", conn:recv(10))
      conn:close()
      assert.is_true((result(p)))
    end)

    it("_TestListenerClient.test_issue16955: poll sees bytes sent right after accept (" .. family .. ")", function()
      local l = new_listener()
      local c = L.Client(l.address, {timeout = 5})
      local a = l:accept(5)
      a:send_bytes("hello")
      assert.is_true(c:poll(1))
      assert.equal("hello", c:recv_bytes(1))
      a:close()
      c:close()
      l:close()
    end)

    it("_TestListener.test_multiple_bind: a second Listener on an address in use raises os (" .. family .. ")", function()
      local l = new_listener()
      local e = err_of(L.Listener, {address = l.address})
      assert.is_true(lmp.is_error(e, "os"), tostring(e))
      assert.matches("in use", tostring(e), 1, true)
      l:close()
    end)

    it("_TestListener.test_context: a closed listener refuses accept (" .. family .. ")", function()
      local l = new_listener()
      CF.with_close(l, function(x)
        local c = L.Client(x.address, {timeout = 5})
        local d = x:accept(5)
        c:send(1729)
        assert.equal(1729, d:recv(5))
        c:close()
        d:close()
      end)
      assert.is_true(l:closed())
      -- deviation: Python raises OSError; lmp's error object says closed
      assert.is_true(lmp.is_error(err_of(l.accept, l, 1), "closed"))
    end)

    it("authenticates both ways with an authkey, then carries values (" .. family .. ")", function()
      local l = new_listener{authkey = KEY}
      local p = child(function(addr)
        local c = L.Client(addr, {authkey = KEY, timeout = 10})
        c:send({n = 1, list = {1, 2, 3}})
        local back = c:recv(10)
        c:close()
        return back
      end, l.address)
      local conn = l:accept(10)
      local v = conn:recv(10)
      assert.same({n = 1, list = {1, 2, 3}}, v)
      conn:send("ok")
      local ok, back = result(p)
      assert.is_true(ok)
      assert.equal("ok", back)
      if family == "tcp" then
        assert.equal("127.0.0.1", l.last_accepted[1])
        assert.is_true(l.last_accepted[2] > 0)
      else
        assert.equal("", l.last_accepted)      -- as Python: no peer address
      end
      conn:close()
      l:close()
    end)

    it("a wrong key raises auth on both sides; the listener goes on serving (" .. family .. ")", function()
      local defer = cleanups()
      local l = new_listener{authkey = KEY}
      defer(function() l:close() end)
      local p = child(function(addr)
        return L.Client(addr, {authkey = "wrong-key", timeout = 10})
      end, l.address)
      defer(function() reap(p) end)
      local e = err_of(l.accept, l, 10)
      assert.is_true(lmp.is_error(e, "auth"), tostring(e))
      local ok, ce = result(p)
      assert.is_false(ok)
      assert.equal("auth", ce.kind)
      assert.matches("refused our authkey", ce.message, 1, true)
      -- the next client with the right key is served
      local p2 = child(function(addr)
        local c = L.Client(addr, {authkey = KEY, timeout = 10})
        c:send("second")
        return c:recv(10)
      end, l.address)
      defer(function() reap(p2) end)
      local conn = l:accept(10)
      assert.equal("second", conn:recv(10))
      conn:send("served")
      local ok2, v = result(p2)
      assert.is_true(ok2)
      assert.equal("served", v)
      conn:close()
    end)
  end

  it("an echo server in a child process serves many clients, one after another and at once", function()
    local defer = cleanups()
    local r, w = lmp.Pipe{duplex = false}
    local server = lmp.Process{args = {w}, target = function(out)
      local l = L.Listener{address = {"127.0.0.1", 0}, authkey = KEY}
      out:send(l.address)
      local conns, denied = {}, 0
      while true do
        local ready = lmp.wait({l, unpack(conns)}, 20)
        if #ready == 0 then error("no client for 20 s") end
        for _, x in ipairs(ready) do
          if x == l then
            local ok, c = pcall(l.accept, l, 5)
            if ok then conns[#conns + 1] = c else denied = denied + 1 end
          else
            local ok, v = pcall(x.recv, x, 5)
            if not ok then
              for i, c in ipairs(conns) do if c == x then table.remove(conns, i) break end end
              x:close()
            elseif v == "stop" then
              x:send({"stopped", denied})
              l:close()
              return
            else
              x:send(v)
            end
          end
        end
      end
    end}
    server:start()
    w:close()
    defer(function() reap(server) end)
    local addr = r:recv(20)
    r:close()
    assert.is_true(addr[2] > 0)

    local function session(tag, n)
      local c = L.Client(addr, {authkey = KEY, timeout = 10})
      for i = 1, n do
        c:send({tag, i})
        local v = c:recv(10)
        assert(v[1] == tag and v[2] == i, "bad echo")
      end
      c:close()
    end
    for i = 1, 20 do session("seq" .. i, 3) end           -- sequential
    -- concurrent: 8 connections open at once from here, interleaved
    local open = {}
    for i = 1, 8 do open[i] = L.Client(addr, {authkey = KEY, timeout = 10}) end
    for round = 1, 5 do
      for i, c in ipairs(open) do c:send({i, round}) end
      for i, c in ipairs(open) do assert.same({i, round}, c:recv(10)) end
    end
    -- and 4 processes with 10 clients each, plus one wrong key
    local kids = {}
    for k = 1, 4 do
      kids[k] = child(function(tag)
        for j = 1, 10 do session(tag .. ":" .. j, 2) end
        return true
      end, "kid" .. k)
      defer(function() reap(kids[k]) end)
    end
    local bad = child(function() return L.Client(addr, {authkey = "nope", timeout = 10}) end)
    defer(function() reap(bad) end)
    for k = 1, 4 do assert.is_true((result(kids[k]))) end
    assert.is_false((result(bad)))
    for _, c in ipairs(open) do c:close() end
    local c = L.Client(addr, {authkey = KEY, timeout = 10})
    c:send("stop")
    assert.same({"stopped", 1}, c:recv(10))
    c:close()
    assert.is_true(server:join(10))
    assert.equal(0, server.exitcode)
  end)

  it("drops a client that sends garbage before the handshake, undecoded; the listener goes on", function()
    local l = L.Listener{authkey = KEY, handshake_timeout = 0.3}
    -- a frame carrying a pickled value, sent before any challenge: the
    -- server reads 64 bytes as the client's proof, refuses it, closes
    local raw = S.connect(l.address[1], l.address[2], 5)
    -- (64 bytes in all, what the server reads: more, left unread, would
    -- make its close a reset that could overtake the refusal)
    local payload, k = "", 0
    while #payload ~= 56 do
      k = k + 1
      payload = lmp.pickle.dumps({"decode me", string.rep("x", k)})
      assert(#payload <= 56, "cannot make a 56-byte payload")
    end
    local n = #payload
    local hdr = string.char(n % 256, math.floor(n / 256) % 256, 0, 0, 1, 0) .. "LM"
    raw:write(hdr .. payload, 5)               -- a PICKLE frame (core/frame.h)
    local e = err_of(l.accept, l, 5)
    assert.is_true(lmp.is_error(e, "auth"), tostring(e))
    -- what the garbage client sees: the 40-byte challenge, 32 zero bytes
    -- (refused), then end of file
    local got = raw:read(72, 5)
    assert.equal("LMPAUTH1", got:sub(1, 8))
    assert.equal(string.rep("\0", 32), got:sub(41, 72))
    assert.is_nil(raw:read(1, 5))
    raw:close()
    -- a client that sends a few bytes and hangs up, and one that says
    -- nothing (held to handshake_timeout): both auth, neither blocks
    local raw2 = S.connect(l.address[1], l.address[2], 5)
    raw2:write("GET / HTTP/1.0\r\n\r\n", 5)
    raw2:close()
    assert.is_true(lmp.is_error(err_of(l.accept, l, 5), "auth"))
    local raw3 = S.connect(l.address[1], l.address[2], 5)
    local t0 = lmp.time()
    e = err_of(l.accept, l, 5)
    assert.is_true(lmp.is_error(e, "auth"), tostring(e))
    assert.is_true(lmp.time() - t0 < 4)
    raw3:close()
    -- the listener still serves a real client
    local p = child(function(addr)
      local c = L.Client(addr, {authkey = KEY, timeout = 10})
      c:send("after garbage")
      return true
    end, l.address)
    local conn = l:accept(10)
    assert.equal("after garbage", conn:recv(10))
    assert.is_true((result(p)))
    conn:close()
    l:close()
  end)

  describe("Unix socket path", function()
    it("is created on listen and removed on close", function()
      local path = tmp_path()
      local l = L.Listener(path)
      assert.equal(path, l.address)
      assert.is_true(exists(path))
      l:close()
      assert.is_false(exists(path))
      l:close()                                    -- idempotent
    end)

    it("is not left behind by a listener that is garbage-collected", function()
      local path = tmp_path()
      do L.Listener{address = path} end
      assert.is_true(exists(path))
      collectgarbage()
      collectgarbage()
      assert.is_false(exists(path))
    end)

    it("is not removed by a forked child that closes its copy", function()
      local path = tmp_path()
      local l = L.Listener(path)
      local p = child(function() l:close() return true end)
      assert.is_true((result(p)))
      assert.is_true(exists(path))
      local c = L.Client(path, {timeout = 5})     -- still served here
      local s = l:accept(5)
      c:send(1)
      assert.equal(1, s:recv(5))
      c:close() s:close()
      l:close()
      assert.is_false(exists(path))
    end)

    it("is not removed when another listener has replaced it", function()
      local path = tmp_path()
      local l = L.Listener(path)
      os.remove(path)                             -- someone removed it...
      local l2 = L.Listener(path)                 -- ...and listens there now
      l:close()
      assert.is_true(exists(path))
      l2:close()
      assert.is_false(exists(path))
    end)
  end)

  it("reports the real port when port 0 was asked", function()
    local l = L.Listener{address = {"127.0.0.1", 0}}
    assert.equal("127.0.0.1", l.address[1])
    assert.is_true(l.address[2] > 0 and l.address[2] < 65536)
    assert.matches(":" .. l.address[2], tostring(l), 1, true)
    local c = L.Client(l.address, {timeout = 5})
    local s = l:accept(5)
    s:send("port ok")
    assert.equal("port ok", c:recv(5))
    c:close() s:close() l:close()
  end)

  it("refuses a non-loopback address without an authkey, naming authkey (nothing bound)", function()
    -- the decision, checked before any socket exists
    for _, host in ipairs({"0.0.0.0", "", "::", "192.0.2.1", "example.org"}) do
      local e = err_of(L.check_bind, {host, 0}, nil)
      assert.equal("string", type(e))           -- a misuse, as for managers
      assert.matches("without an authkey", e, 1, true)
    end
    for _, host in ipairs({"127.0.0.1", "127.0.0.2", "localhost", "::1"}) do
      assert.is_nil(L.check_bind({host, 0}, nil))
    end
    assert.is_nil(L.check_bind({"0.0.0.0", 0}, KEY))    -- with a key: allowed
    assert.is_nil(L.check_bind("/tmp/x.sock", nil))     -- a Unix socket: local
    -- Listener itself refuses before it binds: no socket made, no fd used
    local before = H.count_fds()
    local e = err_of(L.Listener, {address = {"192.0.2.1", 0}})
    assert.matches("authkey", tostring(e), 1, true)
    assert.equal(before, H.count_fds())
  end)

  it("accept(timeout) raises timeout when no client comes", function()
    local l = L.Listener()
    local t0 = lmp.time()
    local e = err_of(l.accept, l, 0.2)
    CF.honoured(lmp.time() - t0)
    assert.is_true(lmp.is_error(e, "timeout"), tostring(e))
    l:close()
  end)

  it("Client raises clear errors: nobody listening, bad arguments", function()
    local l = L.Listener()
    local addr = l.address
    l:close()
    assert.is_true(lmp.is_error(err_of(L.Client, addr, {timeout = 2}), "os"))
    assert.is_true(lmp.is_error(err_of(L.Client, tmp_path(), {timeout = 2}), "os"))
    assert.matches("address", err_of(L.Client, 42))
    assert.matches("authkey", err_of(L.Client, addr, {authkey = ""}))
    assert.matches("unknown option 'authkye'", err_of(L.Client, addr, {authkye = KEY}))
    assert.matches("backlog", err_of(L.Listener, {backlog = 0}))
    assert.matches("codec", err_of(L.Listener, {codec = "xml"}))
    -- a key against a listener without one: the client finds no challenge
    local l2 = L.Listener()
    local p = child(function(a) return L.Client(a, {authkey = KEY, timeout = 1}) end, l2.address)
    local s = l2:accept(10)
    s:send("not a challenge at all, but long enough to be read as one")
    local ok, ce = result(p)
    assert.is_false(ok)
    assert.equal("auth", ce.kind)
    s:close() l2:close()
  end)

  it("connections use the codec asked for, and either end decodes the other's", function()
    local l = L.Listener{codec = "binary"}
    local c = L.Client(l.address, {codec = "json", timeout = 5})
    local s = l:accept(5)
    assert.equal("binary", s:codec())
    assert.equal("json", c:codec())
    s:send({1.5, "x", true})
    assert.same({1.5, "x", true}, c:recv(5))
    c:send({2, {k = "v"}})
    assert.same({2, {k = "v"}}, s:recv(5))
    c:close() s:close() l:close()
  end)
end)
