-- lmp inside programs people already run (examples/hosts/): Neovim and
-- LOVE embed LuaJIT and load the LuaJIT build of lmp with two package path
-- lines; so does a plain luajit. Each host runs the example itself in its
-- test mode (LMP_HOSTS_TEST=1: one summary line on stdout, then it quits),
-- in a session of its own, so that the spec can check that nothing it
-- started (host or forked worker) outlives it.
--
-- These run once, under LMP_LUA=luajit (make test runs the suite under
-- every Lua; the hosts load the LuaJIT build, build/<root>/luajit, found
-- from LMP_BIN).
local H = require "helper"

local q = H.shell_quote
local build = H.lmp_bin:match("^(.*)/bin/lmp$") or (H.root .. "/build/luajit")
local root = H.root
local NO_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_1 -u LUA_CPATH_5_1 "
  .. "-u LUA_INIT -u LUA_INIT_5_1 "

local function installed(program)
  return H.sh("command -v " .. program).code == 0
end

-- Runs `cmd` (a shell command line) in a new session; returns H.sh's
-- result once no process of that session is left (at most 10 s after the
-- command ended: workers the host forked die with it, PR_SET_PDEATHSIG).
local function run_in_session(cmd)
  local r = H.sh("setsid sh -c " .. q("echo sid=$$ >&2; exec " .. cmd))
  local sid = r.err:match("sid=(%d+)")
  assert.truthy(sid, r.err)
  local gone = H.wait_until(function()
    return H.sh("ps -o pid= -s " .. sid).out:match("%d") == nil
  end, 10, 0.02)
  assert.truthy(gone, "processes of the host's session outlived it: "
    .. H.sh("ps -o pid,args -s " .. sid).out)
  return r
end

-- The summary line's key=value fields, as numbers.
local function fields(out, prefix)
  local line = out:match(prefix .. "[^\n]*")
  assert.truthy(line, "no '" .. prefix .. "' line in: " .. out)
  local t = {}
  for k, v in line:gmatch("(%w[%w_]*)=([%d.]+)") do t[k] = tonumber(v) end
  return t
end

-- The two lines of docs/api/embed.md, "Loading lmp into a LuaJIT host".
local PATH_LINES = string.format("package.path = %q .. package.path; "
  .. "package.cpath = %q .. package.cpath; ", root .. "/lua/?.lua;", build .. "/?.so;")

if H.lua_version ~= "luajit" then
  describe("lmp in other hosts", function()
    pending("runs under LMP_LUA=luajit only: the hosts load the LuaJIT build")
  end)
  return
end

describe("lmp in other hosts", function()
  it("plain luajit loads lmp with only package.path and package.cpath set", function()
    local code = PATH_LINES .. [[
      local lmp = require "lmp"
      local pool = lmp.Pool{processes = 2}
      local r = pool:map(function(x) return x * x end, {1, 2, 3})
      pool:terminate()
      print(package.loaded["lmp.core"] and "core" or "none", table.concat(r, " "))]]
    local r = run_in_session(NO_ENV .. "timeout -k 2 30 luajit -e " .. q(code))
    assert.equal(0, r.code, r.out .. r.err)
    assert.equal("core\t1 4 9\n", r.out)
  end)

  it("Neovim delivers a pool's results through its own loop, its timer ticking meanwhile", function()
    if not installed("nvim") then
      pending("nvim is not installed (make deps installs Debian's neovim)")
      return
    end
    -- -i NONE -n: no shada, no swap file; the second -c quits with an
    -- error status when the script failed to load (nvim would stay up).
    local r = run_in_session(NO_ENV .. "env LMP_HOSTS_TEST=1 NVIM_LOG_FILE=/dev/null LMP_ROOT=" .. q(root)
      .. " LMP_BUILD=" .. q(build) .. " timeout -k 5 60 nvim --headless -u NONE -i NONE -n"
      .. " -c " .. q("luafile " .. root .. "/examples/hosts/neovim.lua")
      .. " -c " .. q("if v:errmsg != '' | cquit 3 | endif"))
    assert.equal(0, r.code, r.out .. r.err)
    local s = fields(r.out, "lmp%-hosts nvim")
    print(string.format("\n  nvim: %d results in %.2f s, 1 ms timer ticked %d times, "
      .. "longest poll(0) %.2f ms", s.results, s.seconds, s.ticks, s.max_poll_ms))
    assert.equal(2262, s.primes)            -- the primes below 20,000
    assert.equal(8, s.results)
    assert.equal(8, s.after_return)         -- luafile returned before any result
    -- 8 tasks of >= 0.1 s on 2 workers: >= 0.4 s of computing, during which
    -- a 1 ms timer that fired at all would tick hundreds of times
    assert.is_true(s.seconds >= 0.4)
    assert.is_true(s.ticks >= 20, "timer ticks while the pool computed: " .. s.ticks)
    assert.is_true(s.max_poll_ms < 50, "a poll(0) took " .. s.max_poll_ms .. " ms")
  end)

  it("LOVE keeps its frames coming while a pool computes, poll(0) never waiting", function()
    if not installed("love") then
      pending("love is not installed (make deps installs Debian's love)")
      return
    end
    -- headless: conf.lua turns window, graphics and audio off in test mode;
    -- SDL's dummy drivers keep it off any display or sound server
    local r = run_in_session(NO_ENV .. "env -u DISPLAY -u WAYLAND_DISPLAY LMP_HOSTS_TEST=1"
      .. " SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy LMP_ROOT=" .. q(root)
      .. " LMP_BUILD=" .. q(build) .. " timeout -k 5 60 love "
      .. q(root .. "/examples/hosts/love"))
    assert.equal(0, r.code, r.out .. r.err)
    local s = fields(r.out, "lmp%-hosts love")
    print(string.format("\n  love: %d chunks in %.2f s, %d frames meanwhile, "
      .. "longest poll(0) %.2f ms", s.chunks, s.seconds, s.frames_busy, s.max_poll_ms))
    assert.equal(8, s.chunks)
    assert.is_true(s.seconds >= 0.4)        -- 8 jobs of >= 0.1 s on 2 workers
    assert.is_true(s.frames_busy >= 20, "frames while the pool computed: " .. s.frames_busy)
    assert.is_true(s.max_poll_ms < 50, "a poll(0) took " .. s.max_poll_ms .. " ms")
  end)
end)
