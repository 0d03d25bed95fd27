-- examples/hosts/neovim.lua: an lmp.Pool inside Neovim that never blocks
-- the editor. Debian's neovim (0.7.2) embeds LuaJIT, so it loads the
-- `make LUA=luajit` build of lmp.
--
--   make LUA=luajit
--   nvim -u NONE -c "luafile examples/hosts/neovim.lua"   then  :LmpPrimes 3000000
--
-- Test mode (what spec/13-hosts_spec.lua runs): prints one summary line on
-- stdout and quits.
--
--   LMP_HOSTS_TEST=1 timeout 60 nvim --headless -u NONE -c "luafile examples/hosts/neovim.lua"
--
-- How the results come back: the pool's fd (`pool:fileno()`) is readable
-- whenever the pool has something to do (a result came back, a worker
-- died); a luv poll handle (`vim.loop.new_poll(fd)`) watches it in the
-- editor's own event loop and calls `pool:poll(0)`, which reads the results
-- and runs the AsyncResult callbacks there, without waiting. Between two
-- results lmp runs nothing: no thread, no timer, no signal handler.
-- Callbacks run in a luv callback ("fast" context), where most of vim.api
-- is off limits: they hand what they show to vim.schedule.
--
-- What the workers run: the pool forks Neovim itself (lmp's default start
-- method). This is reliable because a forked worker runs only Lua: the
-- child is a copy of the editor's process with one thread (fork copies
-- only the calling thread; Neovim's libuv threads, and in a terminal the
-- 0.7 TUI thread, stay behind), lmp resets its signal handlers and mask,
-- and the worker loops on its task channel in the copied Lua state, then
-- ends with _exit, so none of the editor's exit code (swap files, shada,
-- the terminal) runs in it. lmp refuses to fork only while lmp's own
-- threads run (lmp.ThreadPool), never because of the host's threads.
-- The rule that follows: task functions compute and return; they must not
-- call vim.* (no editor lives in the worker, and the copied one may hold
-- locks of threads that are gone) nor print (Neovim's print is an editor
-- call). The other start method, spawn, runs `/proc/self/exe -e <boot>`:
-- here `nvim -e`, Ex mode, which does not speak lmp. To use it anyway,
-- point it at a LuaJIT interpreter first (the lmp runtime built for
-- LuaJIT, or Debian's luajit):
--   require("lmp.process").set_executable(build .. "/bin/lmp")
-- and give the Pool `context = lmp.get_context("spawn")` (slower to start,
-- nothing of the editor inherited).
local uv = vim.loop

---------------------------------------------------------------- finding lmp
-- The two lines a LuaJIT host needs (docs/api/embed.md): lmp's Lua files
-- and the directory that holds lmp/core.so. LMP_ROOT and LMP_BUILD
-- override where this file's place says they are.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local root = os.getenv("LMP_ROOT") or uv.fs_realpath(here .. "/../..") or "."
local build = os.getenv("LMP_BUILD") or (root .. "/build/luajit")
package.path = root .. "/lua/?.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local lmp = require "lmp"

---------------------------------------------------------------- the work
-- Primes in [lo, hi) by trial division: plain Lua, shipped to the workers
-- as a closure. min_seconds (test mode) keeps a task going at least that
-- long, so that the test's timer has time to tick on any machine.
local function count_primes(lo, hi, min_seconds)
  local start, n = lmp.time(), 0
  repeat
    n = 0
    for k = math.max(lo, 2), hi - 1 do
      local prime, d = true, 2
      while d * d <= k do
        if k % d == 0 then prime = false break end
        d = d + 1
      end
      if prime then n = n + 1 end
    end
  until not min_seconds or lmp.time() - start >= min_seconds
  return n
end

---------------------------------------------------------------- the plugin
local M = {pool = nil, watcher = nil, max_poll = 0, polls = 0}

-- Polls the pool from the loop; remembers the longest poll (it should
-- never wait: poll(0) only takes what is already there). Protected: an
-- error that leaves a luv callback must be a string, or Neovim 0.7 crashes
-- (its luv error handler copies lua_tostring's result, NULL for lmp's
-- error tables), so it is reported here as text.
local function on_readable(err)
  if err or not M.pool then return end
  local t0 = lmp.time()
  local ok, e = pcall(M.pool.poll, M.pool, 0)
  local dt = lmp.time() - t0
  M.polls = M.polls + 1
  if dt > M.max_poll then M.max_poll = dt end
  if not ok then
    vim.schedule(function() vim.notify("lmp: " .. tostring(e), vim.log.levels.ERROR) end)
  end
end

-- Runs in each worker as it starts: lowers its priority (nice 10), so
-- that the editor gets a core as soon as a key or a result wakes it, even
-- while every core computes (LuaJIT's ffi: Neovim's Lua is LuaJIT).
local function lower_priority()
  local ffi = require "ffi"
  pcall(ffi.cdef, "int setpriority(int which, int who, int prio);")
  ffi.C.setpriority(0, 0, 10)              -- PRIO_PROCESS, this process
end

--- Starts the pool (once) and the watcher of its fd.
function M.start(processes)
  if M.pool then return M.pool end
  M.pool = lmp.Pool{processes = processes or lmp.cpu_count(), initializer = lower_priority}
  M.watcher = uv.new_poll(M.pool:fileno())
  M.watcher:start("r", on_readable)
  return M.pool
end

--- Stops the watcher, then the pool (workers killed and reaped). Not from
-- inside a pool callback (pool:poll is still running then): schedule it.
function M.stop()
  if M.watcher then M.watcher:stop(); M.watcher:close(); M.watcher = nil end
  if M.pool then M.pool:terminate(); M.pool = nil end
end

--- Counts the primes below n in opts.parts tasks (16); calls
-- opts.each(count) for each task's result and done(total, seconds) when
-- the last one is back, all from the loop (in pool:poll). Returns at once.
function M.count_primes(n, done, opts)
  opts = opts or {}
  local parts = opts.parts or 16
  local pool, left, total, t0 = M.start(), parts, 0, lmp.time()
  local step = math.ceil(n / parts)
  for lo = 0, n - 1, step do
    pool:apply_async(count_primes, {lo, math.min(lo + step, n), opts.min_seconds}, {
      callback = function(c)
        if opts.each then opts.each(c) end
        total, left = total + c, left - 1
        if left == 0 then done(total, lmp.time() - t0) end
      end,
      error_callback = function(e)
        vim.schedule(function() vim.notify("lmp: " .. tostring(e), vim.log.levels.ERROR) end)
      end,
    })
  end
end

vim.api.nvim_create_user_command("LmpPrimes", function(o)
  local n = tonumber(o.args) or 3000000
  M.count_primes(n, function(total, secs)
    vim.schedule(function()
      vim.api.nvim_echo({{string.format("lmp: %d primes below %d (%.2f s)",
        total, n, secs)}}, true, {})
    end)
  end)
  vim.api.nvim_echo({{"lmp: counting in the background; keep typing"}}, false, {})
end, {nargs = "?"})
vim.api.nvim_create_autocmd("VimLeavePre", {callback = function() M.stop() end})
-- sourced again: the previous copy's pool stops, this one takes over
local previous = package.loaded["lmp_hosts_neovim"]
if previous then previous.stop() end
package.loaded["lmp_hosts_neovim"] = M

---------------------------------------------------------------- test mode
-- A 1 ms timer ticks while 8 tasks of at least 0.1 s each run on 2
-- workers; the summary says how many results arrived after this file had
-- returned (all of them: nothing here waits), how often the timer ticked
-- meanwhile, and the longest pool:poll(0).
if os.getenv("LMP_HOSTS_TEST") then
  local ticks, returned, results, late = 0, false, 0, 0
  local timer = uv.new_timer()
  timer:start(1, 1, function() ticks = ticks + 1 end)
  M.start(2)
  M.count_primes(20000, function(total, secs)
    timer:stop(); timer:close()
    local line = string.format("lmp-hosts nvim primes=%d results=%d after_return=%d "
      .. "ticks=%d seconds=%.3f polls=%d max_poll_ms=%.3f", total, results, late,
      ticks, secs, M.polls, M.max_poll * 1000)
    vim.schedule(function()
      M.stop()
      io.stdout:write(line, "\n")
      io.stdout:flush()
      vim.cmd("qa!")
    end)
  end, {parts = 8, min_seconds = 0.1, each = function()
    results = results + 1
    if returned then late = late + 1 end
  end})
  returned = true
end

return M
