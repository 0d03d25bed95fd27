-- lmp.Pipe, Connection and lmp.wait.
local lmp = require "lmp"
local H = require "helper"

describe("lmp.Pipe", function()
  it("carries pickled values both ways on a duplex pipe", function()
    local a, b = lmp.Pipe()
    a:send({1, "two", {three = 3.5}})
    local v = b:recv(5)
    assert.equal(1, v[1]); assert.equal("two", v[2]); assert.equal(3.5, v[3].three)
    b:send(false)
    assert.equal(false, a:recv(5))
    a:close(); b:close()
  end)

  it("gives (reader, writer) for duplex = false", function()
    local r, w = lmp.Pipe{duplex = false}
    w:send("hello")
    assert.equal("hello", r:recv(5))
    assert.has_error(function() r:send("x", 0.1) end)
    r:close(); w:close()
  end)

  it("keeps many small messages in order and unmerged", function()
    local a, b = lmp.Pipe()
    for i = 1, 200 do a:send(i, 5) end
    for i = 1, 200 do assert.equal(i, b:recv(5)) end
    a:close(); b:close()
  end)

  it("moves raw bytes with send_bytes/recv_bytes, embedded zeros included", function()
    local a, b = lmp.Pipe()
    a:send_bytes("a\0b\255")
    assert.equal("a\0b\255", b:recv_bytes(5))
    a:send_bytes("0123456789", 2, 3)
    assert.equal("234", b:recv_bytes(5))
    a:close(); b:close()
  end)

  it("delivers a 64 MiB message whole (through another process)", function()
    local a, b = lmp.Pipe()
    local p = lmp.Process{args = {a}, target = function(conn)
      conn:send_bytes(string.rep("x", 64 * 1024 * 1024))
    end}
    p:start()
    local s = b:recv_bytes(60)
    assert.equal(64 * 1024 * 1024, #s)
    assert.is_true(p:join(10))
  end)

  it("poll tells whether a message is waiting", function()
    local a, b = lmp.Pipe()
    assert.is_false(b:poll(0))
    a:send(1)
    assert.is_true(b:poll(1))
    b:recv(1)
    a:close(); b:close()
  end)

  it("recv raises timeout and stays usable", function()
    local a, b = lmp.Pipe()
    local ok, e = pcall(b.recv, b, 0.05)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "timeout"))
    a:send("still works")
    assert.equal("still works", b:recv(5))
    a:close(); b:close()
  end)

  it("recv raises broken when the other end closed", function()
    local a, b = lmp.Pipe()
    a:close()
    local ok, e = pcall(b.recv, b, 5)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "broken"))
    b:close()
  end)

  it("send on a closed connection raises closed; SIGPIPE never kills", function()
    local a, b = lmp.Pipe()
    a:close()
    local ok, e = pcall(a.send, a, 1)
    assert.is_true(lmp.is_error(e, "closed"))
    local r, w = lmp.Pipe{duplex = false}
    r:close()
    ok, e = pcall(w.send, w, "x", 1)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "broken"))
    w:close(); b:close()
  end)

  it("refuses a frame over the connection's limit without allocating it", function()
    local a, b = lmp.Pipe{maxlen = 1024}
    -- a header claiming 1 GiB, written raw to the other end
    local raw = lmp.Connection(b:detach())
    raw:send_frame(2, string.rep("y", 2000))
    local ok, e = pcall(a.recv, a, 5)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "broken"))
    assert.matches("limit", e.message)
    assert.is_true(a:closed())
    raw:close()
  end)

  it("fileno is an fd and tostring names it", function()
    local a, b = lmp.Pipe()
    assert.is_number(a:fileno())
    assert.matches("lmp.Connection %(fd %d+%)", tostring(a))
    a:close()
    assert.equal("lmp.Connection (closed)", tostring(a))
    b:close()
  end)

  it("travels to a spawn child as a Process argument", function()
    local a, b = lmp.Pipe()
    local p = lmp.get_context("spawn").Process{args = {a}, target = function(conn)
      conn:send(conn:recv(10) * 2)
    end}
    p:start()
    b:send(21)
    assert.equal(42, b:recv(10))
    assert.is_true(p:join(10))
  end)

  it("binary codec gives the same values", function()
    local a, b = lmp.Pipe{codec = "binary"}
    a:send({x = 1, y = {2, 3}})
    local v = b:recv(5)
    assert.equal(1, v.x); assert.equal(3, v.y[2])
    a:close(); b:close()
  end)
end)

describe("lmp.wait", function()
  it("returns the connections that are ready", function()
    local a1, b1 = lmp.Pipe()
    local a2, b2 = lmp.Pipe()
    a2:send("x")
    local ready = lmp.wait({b1, b2}, 1)
    assert.equal(1, #ready)
    assert.equal(b2, ready[1])
    assert.equal(0, #lmp.wait({b1}, 0.01))
    a1:close(); b1:close(); a2:close(); b2:close()
  end)

  it("returns a process once it has ended", function()
    local p = lmp.Process{target = function() end}
    p:start()
    local ready = lmp.wait({p}, 10)
    assert.equal(p, ready[1])
    assert.is_true(p:join(10))
  end)
end)

describe("fd hygiene", function()
  it("closing pipes leaks no fd", function()
    local a0, b0 = lmp.Pipe()               -- whatever a first pipe opens for good, open it now
    a0:send(0); b0:recv(1); a0:close(); b0:close()
    collectgarbage() collectgarbage()        -- earlier specs' garbage closes its fds now
    local before = H.list_fds()
    for _ = 1, 50 do
      local a, b = lmp.Pipe()
      a:send(1); b:recv(1)
      a:close(); b:close()
    end
    assert.same(before, H.list_fds())
  end)
end)
