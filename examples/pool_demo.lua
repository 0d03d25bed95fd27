-- pool_demo.lua: count lines, words and bytes of every file under a
-- directory with a pool of workers (`make run` runs it on the repo).
--
--   lmp examples/pool_demo.lua [dir] [workers]
--
-- The master sends each worker a file *name* (a small task description),
-- never the file's contents: workers read the files themselves.
local lmp = require "lmp"

local dir = arg and arg[1] or "."
local nworkers = tonumber(arg and arg[2]) or lmp.cpu_count()

-- The file list, from find(1): regular files, skipping .git and build trees.
local function list_files(root)
  local files = {}
  local cmd = "find " .. string.format("%q", root)
    .. " -type f -not -path '*/.git/*' -not -path '*/build*' -size -4M 2>/dev/null"
  local p = assert(io.popen(cmd))
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  table.sort(files)
  return files
end

-- Runs in a worker: a closure, pickled once and shipped to each worker.
local function count(path)
  local f = io.open(path, "rb")
  if not f then return {path = path, error = "unreadable"} end
  local data = f:read("*a")
  f:close()
  local lines, words = 0, 0
  for _ in data:gmatch("\n") do lines = lines + 1 end
  for _ in data:gmatch("%S+") do words = words + 1 end
  return {path = path, lines = lines, words = words, bytes = #data,
          worker = lmp.current_process().name}
end

local files = list_files(dir)
print(string.format("counting %d files under %s with %d workers", #files, dir, nworkers))

local pool = lmp.Pool{processes = nworkers}
local t0 = lmp.time()
local totals = {lines = 0, words = 0, bytes = 0, files = 0}
local by_worker, biggest = {}, {}
local done, step = 0, math.max(1, math.floor(#files / 10))

for r in pool:imap_unordered(count, files, 8) do
  done = done + 1
  if r.error then
    io.stderr:write(r.path, ": ", r.error, "\n")
  else
    totals.lines, totals.words = totals.lines + r.lines, totals.words + r.words
    totals.bytes, totals.files = totals.bytes + r.bytes, totals.files + 1
    by_worker[r.worker] = (by_worker[r.worker] or 0) + 1
    biggest[#biggest + 1] = r
  end
  if done % step == 0 or done == #files then
    print(string.format("  %5d/%d files  %.0f files/s", done, #files,
      done / math.max(lmp.time() - t0, 1e-6)))
  end
end
pool:close()
pool:join(10)

table.sort(biggest, function(a, b) return a.lines > b.lines end)
print(string.format("\n%d files, %d lines, %d words, %d bytes in %.2f s",
  totals.files, totals.lines, totals.words, totals.bytes, lmp.time() - t0))
print("largest files by lines:")
for i = 1, math.min(5, #biggest) do
  print(string.format("  %7d  %s", biggest[i].lines, biggest[i].path))
end
print("files per worker:")
local names = {}
for name in pairs(by_worker) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do print(string.format("  %-14s %d", name, by_worker[name])) end
