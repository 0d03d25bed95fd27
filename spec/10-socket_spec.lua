-- lmp.bind_socket, lmp.Socket and lmp.Stream (lmp.c.socket).
local lmp = require "lmp"
local H = require "helper"
local S = require "lmp.socket"
local sys = require "lmp.c.sys"

-- A listening socket on 127.0.0.1 and a connected pair (client, server).
local function pair()
  local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}
  local c = S.connect("127.0.0.1", ls.port, 5)
  local s = ls:accept(5)
  return ls, c, s
end

local function raises(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  assert.is_true(lmp.is_error(err, kind), "expected a " .. kind .. " error, got " .. tostring(err))
  return err
end

describe("lmp.bind_socket", function()
  it("binds port 0 and tells the port it got", function()
    local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}
    assert.is_true(ls.port > 0)
    assert.equal("127.0.0.1", ls.host)
    assert.equal("lmp.Socket (fd " .. ls:fileno() .. ", 127.0.0.1:" .. ls.port .. ")", tostring(ls))
    ls:close()
  end)

  it("creates close-on-exec fds only (listening, accepted, connected)", function()
    local ls, c, s = pair()
    assert.is_true(sys.cloexec(ls:fileno()))
    assert.is_true(sys.cloexec(c:fileno()))
    assert.is_true(sys.cloexec(s:fileno()))
    ls:set_inheritable(true)
    assert.is_false(sys.cloexec(ls:fileno()))
    ls:close(); c:close(); s:close()
  end)

  it("accept waits no longer than its timeout", function()
    local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}
    local t0 = lmp.time()
    raises("timeout", ls.accept, ls, 0.2)
    local dt = lmp.time() - t0
    assert.is_true(dt >= 0.15 and dt < 3, "waited " .. dt)
    ls:close()
  end)

  it("reads n bytes, lines (\\n or \\r\\n) and what is available", function()
    local ls, c, s = pair()
    c:write("abc\r\nline2\nrest", 5)
    assert.equal("abc", s:read("l", 5))
    assert.equal("line2\n", s:read("L", 5))
    assert.equal("re", s:read(2, 5))
    assert.equal("st", s:read("a", 5))
    c:write("x\n", 5)
    assert.equal("x", s:read("*l", 5))          -- Lua 5.1 spelling
    c:close()
    assert.is_nil(s:read("a", 5))
    assert.is_nil(s:read("l", 5))
    assert.is_nil(s:read(3, 5))
    ls:close(); s:close()
  end)

  it("returns a last unterminated line and a short count at end of file", function()
    local ls, c, s = pair()
    c:write("tail", 5)
    c:shutdown("w")
    assert.equal("tail", s:read("l", 5))
    assert.is_nil(s:read("l", 5))
    c:close(); s:close()
    ls:close()
    ls, c, s = pair()
    c:write("abc", 5)
    c:close()
    assert.equal("abc", s:read(10, 5))
    ls:close(); s:close()
  end)

  it("keeps the bytes of a read that timed out for the next read", function()
    local ls, c, s = pair()
    c:write("par", 5)
    local t0 = lmp.time()
    raises("timeout", s.read, s, "l", 0.1)
    assert.is_true(lmp.time() - t0 < 3)
    c:write("tial\n", 5)
    assert.equal("partial", s:read("l", 5))
    ls:close(); c:close(); s:close()
  end)

  it("uses the default timeout set by settimeout", function()
    local ls, c, s = pair()
    s:settimeout(0.1)
    assert.equal(0.1, s.timeout)
    local t0 = lmp.time()
    raises("timeout", s.read, s, "a")
    assert.is_true(lmp.time() - t0 < 3)
    s:settimeout(nil)
    assert.is_nil(s.timeout)
    ls:close(); c:close(); s:close()
  end)

  it("knows the peer address of both ends", function()
    local ls, c, s = pair()
    assert.equal("127.0.0.1:" .. ls.port, c.peer)
    assert.truthy(s.peer:match("^127%.0%.0%.1:%d+$"))
    assert.equal("lmp.Stream (fd " .. s:fileno() .. ", peer " .. s.peer .. ")", tostring(s))
    ls:close(); c:close(); s:close()
  end)

  it("write raises timeout when the peer does not read", function()
    local ls, c, s = pair()
    local t0 = lmp.time()
    raises("timeout", c.write, c, string.rep("x", 32 * 1024 * 1024), 0.2)
    assert.is_true(lmp.time() - t0 < 3)
    ls:close(); c:close(); s:close()
  end)

  it("write raises broken once the peer has gone", function()
    local ls, c, s = pair()
    s:close()
    local err
    for _ = 1, 100 do                       -- the first writes may still land
      local ok, e = pcall(c.write, c, string.rep("y", 4096), 1)
      if not ok then err = e break end
    end
    assert.is_true(lmp.is_error(err, "broken"), tostring(err))
    ls:close(); c:close()
  end)

  it("closes idempotently; use after close raises closed", function()
    local ls, c, s = pair()
    s:close(); s:close()
    assert.is_true(s:closed())
    assert.equal("lmp.Stream (closed)", tostring(s))
    raises("closed", s.read, s, "l", 1)
    raises("closed", s.write, s, "x")
    ls:close(); ls:close()
    assert.equal("lmp.Socket (closed)", tostring(ls))
    raises("closed", ls.accept, ls, 0)
    c:close()
  end)

  it("listens on IPv6 when asked", function()
    local ok, ls = pcall(lmp.bind_socket, {host = "::1", port = 0})
    assert.is_true(ok, tostring(ls))
    assert.equal("lmp.Socket (fd " .. ls:fileno() .. ", [::1]:" .. ls.port .. ")", tostring(ls))
    local c = S.connect("::1", ls.port, 5)
    local s = ls:accept(5)
    assert.equal("[::1]:" .. ls.port, c.peer)
    assert.truthy(s.peer:match("^%[::1%]:%d+$"))
    c:write("v6\n", 5)
    assert.equal("v6", s:read("l", 5))
    ls:close(); c:close(); s:close()
  end)

  it("shares a port with SO_REUSEPORT only when asked", function()
    local a = lmp.bind_socket{host = "127.0.0.1", port = 0, reuseport = true}
    local b = lmp.bind_socket{host = "127.0.0.1", port = a.port, reuseport = true}
    assert.equal(a.port, b.port)
    raises("os", lmp.bind_socket, {host = "127.0.0.1", port = a.port})
    a:close(); b:close()
  end)

  it("serves a Unix socket path", function()
    local path = os.tmpname()
    os.remove(path)
    local ls = lmp.bind_socket{path = path}
    assert.equal(0, ls.port)
    local c = S.connect{path = path, timeout = 5}
    local s = ls:accept(5)
    c:write("unix\n", 5)
    assert.equal("unix", s:read("l", 5))
    ls:close(); c:close(); s:close()
    os.remove(path)
  end)

  it("refuses a line longer than the limit", function()
    local ls, c, s = pair()
    s:set_max_line(10)
    c:write(string.rep("z", 20), 5)
    local err = raises("broken", s.read, s, "l", 1)
    assert.truthy(tostring(err):find("longer than 10 bytes", 1, true))
    ls:close(); c:close(); s:close()
  end)

  it("detach hands the fd (and bytes read ahead) to other code", function()
    local ls, c, s = pair()
    c:write("ab\ncd", 5)
    assert.equal("ab", s:read("l", 5))
    local fd, ahead = s:detach()
    assert.is_true(s:closed())
    assert.equal("cd", ahead)
    assert.is_true(sys.write(fd, "via fd\n"))
    assert.equal("via fd", c:read("l", 5))
    sys.close(fd)
    local lfd = ls:detach()
    assert.is_true(ls:closed())
    assert.is_true(sys.cloexec(lfd))
    sys.close(lfd)
    c:close()
  end)

  it("raises ordinary errors for bad arguments", function()
    assert.has_error(function() lmp.bind_socket("x") end)
    assert.has_error(function() lmp.bind_socket{port = 70000} end)
    assert.has_error(function() lmp.bind_socket{port = "80"} end)
    assert.has_error(function() lmp.bind_socket{port = 0, colour = 1} end)
    assert.has_error(function() lmp.bind_socket{port = 0, backlog = 0} end)
    assert.has_error(function() S.connect(1, 2) end)
    local ls, c, s = pair()
    assert.has_error(function() s:read("z") end)
    assert.has_error(function() s:read(-1) end)
    assert.has_error(function() s:read("l", -1) end)
    assert.has_error(function() s:settimeout(-1) end)
    assert.has_error(function() s:shutdown("x") end)
    assert.has_error(function() ls:accept(-1) end)
    ls:close(); c:close(); s:close()
  end)

  it("refuses in a forked child a connection its parent created", function()
    local r = H.run_lmp([[
      local S = require "lmp.socket"
      local ls = lmp.bind_socket{host = "127.0.0.1", port = 0}
      local c = S.connect("127.0.0.1", ls.port, 5)
      local s = ls:accept(5)
      local p = lmp.Process{target = function()
        local ok, err = pcall(c.write, c, "from child\n", 1)
        print("child write", ok, lmp.is_error(err, "closed"), tostring(err))
        ok, err = pcall(s.read, s, "l", 1)
        print("child read", ok, lmp.is_error(err, "closed"))
        -- the listening socket is meant to be shared: accept works
        local c2 = S.connect("127.0.0.1", ls.port, 5)
        local s2 = ls:accept(5)
        c2:write("shared\n", 5)
        print("child accept", s2:read("l", 5))
        c:close()                          -- drops only the child's copy
      end}
      p:start()
      assert(p:join(10))
      c:write("from parent\n", 5)
      print("parent read", s:read("l", 5))
    ]], {timeout = 20})
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("child write\tfalse\ttrue\tclosed: connection to 127.0.0.1:%d+ %(fd %d+%) "
      .. "was created by process %d+ and cannot be used in process %d+"), r.out)
    assert.truthy(r.out:find("child read\tfalse\ttrue", 1, true), r.out)
    assert.truthy(r.out:find("child accept\tshared", 1, true), r.out)
    assert.truthy(r.out:find("parent read\tfrom parent", 1, true), r.out)
  end)
end)
