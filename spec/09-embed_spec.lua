-- The C embedding API (modules/lmp.h): the example host of
-- examples/embed/ and the C tests of spec/c/embed/test_embed.c, both built
-- for the Lua under test, each run as a separate process.
local H = require "helper"

local q = H.shell_quote
local build = H.lmp_bin:match("^(.*)/bin/lmp$") or (H.root .. "/build/" .. H.lua_version)
local host_bin = build .. "/examples/host"
local test_bin = build .. "/ctest/test_embed"

local sh = H.sh

-- Runs one test of test_embed; asserts it passed.
local function c_test(name)
  local r = sh("timeout -k 5 120 " .. q(test_bin) .. " " .. name)
  local all = r.out .. r.err
  assert.equal(0, r.code, all)
  assert.truthy(r.out:find("1 passed, 0 failed", 1, true), all)
  return r
end

-- Bit n (1-based signal number) of a /proc/<pid>/status mask line.
local function caught(status, sig)
  local hex = status:match("SigCgt:%s*(%x+)")
  local low = tonumber(hex:sub(-8), 16)
  return math.floor(low / 2 ^ (sig - 1)) % 2 == 1
end

describe("the C embedding API", function()
  it("a C host at 60 Hz keeps its frames short while the pool is saturated", function()
    local r = sh("timeout -k 5 60 " .. q(host_bin) .. " 3")
    assert.equal(0, r.code, r.out .. r.err)       -- no search failed, no lmp_poll error
    local worst = tonumber(r.out:match("worst frame: ([%d.]+) ms"))
    local cpu = tonumber(r.out:match("worst frame cpu: ([%d.]+) ms"))
    local results = tonumber(r.out:match("results: (%d+) paths"))
    local frames = tonumber(r.out:match("frames: (%d+)"))
    local gap = tonumber(r.out:match("worst frame interval: ([%d.]+) ms"))
    print(string.format("\n  embedded host (Lua %s): worst frame %.2f ms of work "
      .. "(%.2f ms CPU), worst interval %.2f ms, %d results, %d frames",
      H.lua_version, worst or -1, cpu or -1, gap or -1, results or -1, frames or -1))
    assert.is_number(worst, r.out)
    -- The frame's own work in its thread's CPU time (the host waits for
    -- its next frame in ppoll, which takes none): a busy machine that
    -- preempts the frame loop stretches its wall-clock figures, not this.
    -- lmp's share of a frame (lmp_poll(L, 0), callbacks, apply_async) is
    -- well under a millisecond; 50 ms is three frames' budget.
    assert.is_number(cpu, r.out)
    assert.is_true(cpu <= 50, r.out)
    -- results came back into the frame loop while it ticked
    assert.is_true(results >= 1, r.out)
    assert.is_true(frames >= 1, r.out)
  end)

  it("runs scripts in runtimes and reports their errors without exiting the host", function()
    c_test("runtime_dofile")
  end)

  it("lmp_poll delivers callbacks and error callbacks in the host's thread", function()
    c_test("poll_delivers_callbacks")
  end)

  it("lmp_fileno becomes readable when a result is ready, and not while idle", function()
    c_test("fileno_readable_when_result_ready")
  end)

  it("lmp_poll waits at most its timeout, and returns at once with no live pool", function()
    c_test("poll_waits_at_most_its_timeout")
  end)

  it("a callback that raises makes lmp_poll return -1 with its message, not crash", function()
    c_test("callback_error_returns_minus_one")
  end)

  it("lmp_poll and lmp_fileno fail softly in a state without lmp", function()
    c_test("poll_and_fileno_without_lmp")
  end)

  it("installs no signal handler in a host unless asked", function()
    c_test("no_signal_handlers_by_default")
  end)

  it("lmp_install_signal_handlers interrupts scripts, then restores the host's handlers", function()
    c_test("signal_handlers_on_request")
  end)

  it("creates and destroys 1,000 runtimes without leaking an fd or a child", function()
    local r = c_test("many_runtimes")
    print("\n  " .. (r.out:match("many_runtimes: [^\n]*") or "?"))
  end)

  it("a fork child's pools work after the parent took the host's fd", function()
    local lmp = require "lmp"
    local fd = require("lmp.pool")._fileno_all()       -- what lmp_fileno uses
    assert.is_number(fd)
    local a, b = lmp.Pipe()
    local p = lmp.Process{target = function()
      local ok, r = pcall(function()
        local pool = lmp.Pool{processes = 1}
        local v = pool:apply(function() return 5 end)
        pool:terminate()
        return v
      end)
      b:send({ok, tostring(r)})
    end}
    p:start()
    local msg = a:recv(30)
    assert.is_true(p:join(10))
    a:close()
    b:close()
    assert.same({true, "5"}, msg)
  end)

  it("the lmp runtime catches SIGTERM; a plain interpreter that requires lmp does not", function()
    local code = "local p = lmp.Pool{processes = 1} p:apply(function() end) "
      .. "io.write(io.open('/proc/self/status'):read('*a')) p:terminate()"
    local r = sh("timeout -k 2 30 " .. q(H.lmp_bin) .. " -e " .. q(code))
    assert.equal(0, r.code, r.err)
    assert.is_true(caught(r.out, 15))
    assert.is_true(caught(r.out, 2))
    local bins = {["5.4"] = "lua5.4", ["5.1"] = "lua5.1", luajit = "luajit"}
    r = sh("timeout -k 2 30 " .. (bins[H.lua_version] or "lua5.4") .. " -e "
      .. q("lmp = require 'lmp' " .. code))
    assert.equal(0, r.code, r.err)
    assert.is_false(caught(r.out, 15))
  end)
end)
