-- lmp.log: records, levels, per-child files, whole-line writes, progress.
local lmp = require "lmp"
local H = require "helper"
local sys = require "lmp.c.sys"
local log = lmp.log

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local RECORD = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d (%u+) %[([%w%-]+) pid=(%d+) task=([%d%-]+)%] (.*)$"

describe("lmp.log", function()
  after_each(function()
    log.to_stderr()
    log.set_level("info")
    log.set_format(log.DEFAULT_FORMAT)
  end)

  it("formats a record with time, level, process name, pid and task id", function()
    local line = log.format_record("info", "hello")
    assert.equal("\n", line:sub(-1))
    local level, name, pid, task, msg = line:sub(1, -2):match(RECORD)
    assert.equal("INFO", level)
    assert.equal("MainProcess", name)
    assert.equal(H.getpid(), tonumber(pid))
    assert.equal("-", task)
    assert.equal("hello", msg)
  end)

  it("filters by level and formats arguments", function()
    local path = os.tmpname()
    log.to_file(path)
    log.set_level("warning")
    assert.equal("warning", log.get_level())
    assert.is_false(log.info("dropped"))
    assert.is_true(log.warning("kept %d %s", 42, "x"))
    assert.is_true(log.error("plain %d"))      -- no arguments: not a pattern
    local t = lines(slurp(path))
    assert.equal(2, #t)
    assert.equal("kept 42 x", select(5, t[1]:match(RECORD)))
    assert.equal("ERROR", t[2]:match(RECORD))
    assert.equal("plain %d", select(5, t[2]:match(RECORD)))
    os.remove(path)
  end)

  it("takes a format with {time} {level} {name} {pid} {task} {msg}", function()
    log.set_format("{level}|{name}|{task}|{msg}")
    assert.equal("ERROR|MainProcess|-|x\n", log.format_record("error", "x"))
    assert.equal("CRITICAL|MainProcess|-|y\n", log.format_record(50, "y"))
  end)

  it("raises ordinary errors for bad arguments", function()
    assert.has_error(function() log.set_level("loud") end)
    assert.has_error(function() log.set_format(1) end)
    assert.has_error(function() log.to_file(nil) end)
    assert.has_error(function() log.write("nope", "x") end)
    assert.is_true(lmp.is_error(select(2, pcall(log.to_file, "/nonexistent/dir/x.log")), "os"))
  end)

  it("gives each fork_processes child its own file and task id", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert.is_true(os.execute("mkdir " .. dir) ~= false)
    local r = H.run_lmp(string.format([[
      lmp.log.to_file(%q .. "/app-{task}.log")   -- the parent's: app--.log
      lmp.log.info("parent")
      local id = lmp.fork_processes(3)
      lmp.log.info("hello from %%d", id)
    ]], dir), {timeout = 20})
    assert.equal(0, r.code, r.err)
    local parent = lines(slurp(dir .. "/app--.log"))
    assert.equal("parent", select(5, parent[1]:match(RECORD)))
    for id = 0, 2 do
      local t = lines(slurp(dir .. "/app-" .. id .. ".log"))
      assert.equal(1, #t)
      local _, name, _, task, msg = t[1]:match(RECORD)
      assert.equal("Task-" .. id, name)
      assert.equal(tostring(id), task)
      assert.equal("hello from " .. id, msg)
    end
    os.execute("rm -rf " .. dir)
  end)

  -- 4 children x 1500 records of ~300 bytes, written at the same time to
  -- one file opened before fork (O_APPEND) or to a shared stderr.
  for _, dest in ipairs{"file", "stderr"} do
    it("never interleaves records of several children mid-line (" .. dest .. ")", function()
      local path = os.tmpname()
      local r = H.run_lmp(string.format([[
        local dest, path = %q, %q
        if dest == "file" then lmp.log.to_file(path) end
        lmp.log.info("before fork")
        local id = lmp.fork_processes(4)
        local pad = string.rep(string.char(97 + id), 250)
        for i = 1, 1500 do lmp.log.info("n=%%d %%s", i, pad) end
      ]], dest, path), {timeout = 30})
      assert.equal(0, r.code, r.err)
      local text = dest == "file" and slurp(path) or r.err
      local count, last = {}, {}
      for _, l in ipairs(lines(text)) do
        local _, name, _, task, msg = l:match(RECORD)
        assert.truthy(name, "malformed line: " .. l:sub(1, 120))
        if task ~= "-" then
          local n, pad = msg:match("^n=(%d+) (%l+)$")
          assert.equal(string.rep(string.char(97 + tonumber(task)), 250), pad)
          n = tonumber(n)
          assert.equal((last[task] or 0) + 1, n)     -- in order, none lost
          last[task] = n
          count[task] = (count[task] or 0) + 1
        end
      end
      for id = 0, 3 do assert.equal(1500, count[tostring(id)]) end
      os.remove(path)
    end)
  end

  it("formats progress: done/total, percentage, rate and ETA", function()
    assert.equal("[##########          ] 50/100  50% 5.0/s ETA 10s",
      log.format_progress(50, 100, 10))
    assert.equal("[####################] 100/100 100% 10.0/s ETA 0s",
      log.format_progress(100, 100, 10))
    assert.equal("[#                   ] 1/20   5% 0.0/s ETA 1h16m",
      log.format_progress(1, 20, 240))
    assert.equal("[                    ] 0/3   0% 0.0/s ETA ?", log.format_progress(0, 3, 1))
  end)

  it("writes progress to a terminal only (or when forced), ending with a newline", function()
    local path = os.tmpname()
    local fd = sys.open_append(path)
    local t0 = lmp.time() - 2
    local line = log.progress(1, 4, t0, {fd = fd})
    assert.truthy(line:find("1/4", 1, true))
    assert.equal("", slurp(path))               -- not a terminal
    log.progress(4, 4, t0, {fd = fd, force = true})
    local s = slurp(path)
    assert.equal("\r", s:sub(1, 1))
    assert.truthy(s:find("4/4 100%", 1, true))
    assert.equal("\n", s:sub(-1))
    sys.close(fd)
    os.remove(path)
  end)
end)
