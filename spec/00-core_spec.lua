-- The foundation: error objects, the clock, atexit, the lazy module table.
local lmp = require "lmp"
local H = require "helper"

describe("lmp error objects", function()
  it("carry kind and message and print as 'kind: message'", function()
    local e = lmp.error("timeout", "recv timed out")
    assert.equal("timeout", e.kind)
    assert.equal("recv timed out", e.message)
    assert.equal("timeout: recv timed out", tostring(e))
  end)

  it("are recognised by lmp.is_error, with or without a kind", function()
    local e = lmp.error("closed", "pipe is closed")
    assert.is_true(lmp.is_error(e))
    assert.is_true(lmp.is_error(e, "closed"))
    assert.is_false(lmp.is_error(e, "timeout"))
    assert.is_false(lmp.is_error({kind = "closed"}))
    assert.is_false(lmp.is_error("closed"))
    assert.is_false(lmp.is_error(nil))
  end)

  it("keep extra fields and append a traceback when printed", function()
    local e = lmp.error("remote", "boom", {traceback = "tb line", index = 3})
    assert.equal(3, e.index)
    assert.equal("remote: boom\ntb line", tostring(e))
  end)

  it("travel through error() and pcall unchanged", function()
    local ok, e = pcall(error, lmp.error("empty", "queue is empty"), 0)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "empty"))
  end)
end)

describe("lmp.time and lmp.sleep", function()
  it("time is monotonic and sleep waits about as long as asked", function()
    local t0 = lmp.time()
    lmp.sleep(0.05)
    local dt = lmp.time() - t0
    assert.is_true(dt >= 0.049, "slept " .. dt)
    assert.is_true(dt < 2, "slept " .. dt)
  end)

  it("sleep of zero or a negative number returns at once", function()
    -- ten zero sleeps and a sleep of -10 s: a sleep of 0 that waited
    -- half a second, or a negative one taken for its absolute value,
    -- would pass 5 s; a busy machine does not come near it
    local t0 = lmp.time()
    for _ = 1, 10 do lmp.sleep(0) end
    lmp.sleep(-10)
    local dt = lmp.time() - t0
    assert.is_true(dt < 5, "took " .. dt)
  end)

  it("rejects a non-number", function()
    assert.has_error(function() lmp.sleep("soon") end)
  end)
end)

describe("the lmp module table", function()
  it("exposes a version and resolves unknown names to nil", function()
    assert.is_string(lmp._VERSION)
    assert.is_nil(lmp.no_such_function)
  end)
end)

describe("lmp.core.new_table", function()
  it("makes an empty table with room reserved, and refuses sizes out of range", function()
    local core = require "lmp.core"
    local t = core.new_table(1000, 4)
    assert.equal(0, #t)
    assert.is_nil(next(t))
    for i = 1, 1000 do t[i] = i end
    t.x = true
    assert.equal(1000, #t)
    assert.same({}, core.new_table(0))
    for _, bad in ipairs{{-1}, {2 ^ 27}, {1, -1}, {"x"}} do
      local ok, e = pcall(core.new_table, bad[1], bad[2])
      assert.is_false(ok)
      assert.truthy(tostring(e):find("bad argument", 1, true), tostring(e))
    end
  end)
end)

describe("lmp.core.atexit", function()
  it("runs handlers in reverse order when the runtime ends", function()
    local r = H.run_lmp([[
      local core = require "lmp.core"
      core.atexit(function() io.write("first\n") end)
      core.atexit(function() io.write("second\n") end)
      core.atexit(function() error("a failing handler does not stop the others") end)
      print("body")
    ]])
    assert.equal(0, r.code)
    assert.equal("body\nsecond\nfirst\n", r.out)
  end)
end)
