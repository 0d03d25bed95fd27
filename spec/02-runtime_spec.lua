-- The lmp runtime (modules/lmp_main.c): arguments, -e, -v, -, errors,
-- signals; and `require "lmp"` from the plain interpreters.
local H = require "helper"
local lmp = require "lmp"

local q = H.shell_quote

local sh = H.sh

local function lmp_cmd(args)
  return "timeout -k 2 20 " .. q(H.lmp_bin) .. " " .. args
end

describe("the lmp runtime", function()
  it("runs a script with arg set as lua sets it", function()
    local r = H.run_lmp([[
      print(#arg, arg[1], arg[2], select("#", ...), ...)
      print(arg[0]:match("%.lua$") ~= nil or arg[0]:match("lua_") ~= nil or arg[0] ~= nil)
      print(type(arg[-1]))
    ]], {args = {"a", "'b c'"}})
    assert.equal(0, r.code, r.err)
    local lines = {}
    for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("2\ta\tb c\t2\ta\tb c", lines[1])
    assert.equal("true", lines[2])
    assert.equal("string", lines[3])
  end)

  it("preloads lmp for the script", function()
    local r = H.run_lmp([[print(type(require("lmp").pickle.dumps), type(lmp))]])
    assert.equal(0, r.code, r.err)
    assert.equal("function\ttable\n", r.out)
  end)

  it("runs code given with -e", function()
    local r = sh(lmp_cmd("-e " .. q("print(6 * 7)")))
    assert.equal(0, r.code, r.err)
    assert.equal("42\n", r.out)
  end)

  it("prints its version with -v", function()
    local r = sh(lmp_cmd("-v"))
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("^lmp %d+%.%d+"), r.out)
    assert.truthy(r.out:find("Lua") or r.out:find("LuaJIT"), r.out)
  end)

  it("reads the script from stdin with -", function()
    local r = sh("printf 'print(\"in\", ...)' | " .. q(H.lmp_bin) .. " - x y")
    assert.equal(0, r.code, r.err)
    assert.equal("in\tx\ty\n", r.out)
  end)

  it("prints an uncaught error with a traceback to stderr and exits 1", function()
    local r = H.run_lmp([[
      local function inner() error("boom") end
      inner()
    ]])
    assert.equal(1, r.code)
    assert.equal("", r.out)
    assert.truthy(r.err:find("boom"), r.err)
    assert.truthy(r.err:find("stack traceback"), r.err)
    assert.truthy(r.err:find("inner"), r.err)
  end)

  it("prints an uncaught error object as 'kind: message'", function()
    local r = H.run_lmp([[error(lmp.error("timeout", "too slow"))]])
    assert.equal(1, r.code)
    assert.truthy(r.err:find("timeout: too slow", 1, true), r.err)
  end)

  it("exits 0 at the end of a script and runs atexit handlers", function()
    local r = H.run_lmp([[
      require("lmp.core").atexit(function() io.write("bye\n") end)
      print("end")
    ]])
    assert.equal(0, r.code, r.err)
    assert.equal("end\nbye\n", r.out)
  end)

  it("ends quickly with status 130 on SIGINT during lmp.sleep", function()
    local flag = os.tmpname()
    os.remove(flag)
    local script = "io.open(" .. string.format("%q", flag) .. ", 'w'):close() lmp.sleep(30)"
    local cmd = string.format([[
      %s -e %s & p=$!
      i=0; while [ ! -e %s ] && [ $i -lt 400 ]; do sleep 0.025; i=$((i+1)); done
      t0=$(date +%%s%%N); kill -INT $p; wait $p; rc=$?; t1=$(date +%%s%%N)
      echo "$rc $(( (t1 - t0) / 1000000 ))"]], q(H.lmp_bin), q(script), q(flag))
    local r = sh(cmd)
    os.remove(flag)
    local rc, ms = r.out:match("(%d+) (%d+)")
    assert.equal("130", rc, r.out .. r.err)
    -- interrupted, not the 30 s sleep run out (a wide margin for a busy machine)
    assert.is_true(tonumber(ms) < 10000, "took " .. tostring(ms) .. " ms")
    assert.truthy(r.err:find("interrupted"), r.err)
  end)

  it("asks malloc for huge pages, in spawned children too, and leaves the environment as it was", function()
    -- what the runtime does (core/hugepage.h): tuned when the kernel gives
    -- transparent huge pages at all and the build uses glibc's malloc
    local f = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
    local thp = f and f:read("*l") or "[never]"
    if f then f:close() end
    local tuned = not thp:find("[never]", 1, true) and
      not (os.getenv("LD_PRELOAD") or ""):find("libasan", 1, true)
    local probe = [[
      local lmp = require "lmp"
      local function probe()
        local big = string.rep("x", 64 * 1024 * 1024)
        local ffi, block = jit and require "ffi"
        if ffi then   -- LuaJIT's strings are not malloc's: ask malloc itself
          pcall(ffi.cdef, "void *malloc(size_t); void free(void *);")
          block = ffi.C.malloc(#big)
        end
        local hg = 0      -- mappings advised MADV_HUGEPAGE ("hg" in VmFlags)
        for l in io.lines("/proc/self/smaps") do
          if l:match("^VmFlags:.* hg") then hg = hg + 1 end
        end
        if block then ffi.C.free(block) end
        -- for a failure's message: whether this process started tuned (the
        -- runtime's marker is in the environment it was exec'd with; glibc
        -- rewrites GLIBC_TUNABLES there), and the kernel's THP mode now
        local function first_line(path)
          local h = io.open(path)
          local l = h and h:read(path:find("environ") and "*a" or "*l") or "?"
          if h then h:close() end
          return l
        end
        local env0 = first_line("/proc/self/environ")
        local fds = io.popen("ls /proc/" .. lmp.current_process().pid .. "/fd | wc -l")
        local nfd = fds:read("*a"):gsub("%s", "")
        fds:close()
        io.stderr:write(("pid %d: hg mappings %d; started tuned: %s; exec-time %s; %s; fds %s; THP %s\n"):format(
          lmp.current_process().pid, hg,
          tostring(env0:find("LMP_MALLOC_SAVED_TUNABLES=", 1, true) ~= nil),
          (env0:match("%zGLIBC_TUNABLES=[^%z]*[^=]*") or "no GLIBC_TUNABLES"):gsub("%z", "|"),
          (env0:match("%zLMP_MALLOC_SAVED_TUNABLES=[^%z]*") or "no saved"):gsub("%z", "|"),
          nfd, first_line("/sys/kernel/mm/transparent_hugepage/enabled")))
        return (hg > 0 and "huge" or "plain") .. " " .. tostring(os.getenv("GLIBC_TUNABLES")) ..
          " " .. tostring(os.getenv("LMP_MALLOC_SAVED_TUNABLES")) .. " " .. #big
      end
      local q = lmp.Queue()
      local p = lmp.get_context("spawn").Process{target = function(q, f) q:put(f()) end, args = {q, probe}}
      p:start()
      print(probe())
      print(q:get(20))
      assert(p:join(20))
    ]]
    local big = 64 * 1024 * 1024
    local function lines(env)
      local r = H.run_lmp(probe, {env = env, timeout = 60})
      assert.equal(0, r.code, r.err)
      local t = {}
      for l in r.out:gmatch("[^\n]+") do t[#t + 1] = l end
      return t, r.err
    end
    local function check(want, env)
      local got, err = lines(env)
      assert.same({want, want}, got, env .. "; the processes said:\n" .. err)
    end
    local mode = tuned and "huge" or "plain"
    check(mode .. " nil nil " .. big, "env -u GLIBC_TUNABLES")
    check(mode .. " glibc.malloc.check=0 nil " .. big, "GLIBC_TUNABLES=glibc.malloc.check=0")
    check("plain nil nil " .. big, "env -u GLIBC_TUNABLES LMP_MALLOC=default")
  end)

  it("can be required from the plain interpreter", function()
    local bins = {["5.4"] = "lua5.4", ["5.1"] = "lua5.1", luajit = "luajit"}
    local bin = bins[H.lua_version] or "lua5.4"
    local r = sh("timeout 20 " .. bin .. " -e " ..
      q("local l = require 'lmp'; print(l._VERSION ~= nil, type(l.pickle.loads))"))
    assert.equal(0, r.code, r.err)
    assert.equal("true\tfunction\n", r.out)
    assert.is_string(lmp._VERSION)
  end)
end)
