--- Helpers shared by the specs of spec/conformance/ (CPython's
-- _test_multiprocessing.py restated against lmp).
local assert = require "luassert"   -- busted's assert, here outside a spec file
local CF = {}

CF.METHODS = {"fork", "spawn"}

--- busted keeps one finally() per test: defer(fn) collects cleanups that
-- all run (last first) when the test ends. Call once per test, with busted's
-- finally (it lives in the spec file's environment, not in this module's).
function CF.cleanups(finally)
  local list = {}
  finally(function()
    for i = #list, 1, -1 do pcall(list[i]) end
  end)
  return function(fn) list[#list + 1] = fn end
end

--- Kills and joins p if it still runs (a cleanup for finally()).
function CF.reap(p)
  if p and rawget(p, "pid") and p:is_alive() then
    p:kill()
    p:join(10)
  end
end

--- Asserts that a 0.2 s timeout was honoured, with generous bounds.
function CF.honoured(dt)
  assert.is_true(dt >= 0.15 and dt < 5, "waited " .. dt .. " s for a 0.2 s timeout")
end

--- `local x <close> = obj` on Lua 5.4 (Python's `with`): fn(obj), then
-- obj's __close, which is what the end of such a scope calls elsewhere too.
function CF.with_close(obj, fn)
  if _VERSION == "Lua 5.4" then
    local run = assert(load("local obj, fn = ... local x <close> = obj fn(x)"))
    return run(obj, fn)
  end
  local ok, e = pcall(fn, obj)
  getmetatable(obj).__close(obj)
  if not ok then error(e, 0) end
end

return CF
