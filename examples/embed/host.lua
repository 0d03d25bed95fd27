-- host.lua: the Lua side of examples/embed/host.c, run in its lmp runtime.
--
-- The C host sets WORKERS (0: one per core) and registers path_found and
-- path_failed; this script makes the pool and gives the host
-- request_path(seed), which hands one search to a worker. Callbacks run in
-- the host's thread, inside lmp_poll.
local lmp = require "lmp"

local SIZE = 100                 -- grid side: a few ms of work per search

-- Shortest path length from the top-left to the bottom-right corner of a
-- SIZE x SIZE grid whose walls come from seed (-1: no way through):
-- a breadth-first search, the CPU-bound part of a game's path-finding.
local function shortest_path(size, seed)
  local open, state = {}, seed % 2147483647 + 1
  for cell = 1, size * size do
    state = state * 48271 % 2147483647
    open[cell] = state % 100 >= 22
  end
  open[1], open[size * size] = true, true
  local dist, frontier, n = {[1] = 0}, {1}, 1
  local head = 1
  while head <= n do
    local cell = frontier[head]
    head = head + 1
    local d, col = dist[cell] + 1, (cell - 1) % size
    local up, down = cell - size, cell + size
    local left, right = col > 0 and cell - 1, col < size - 1 and cell + 1
    for _, nb in ipairs{up > 0 and up, down <= size * size and down, left, right} do
      if nb and open[nb] and not dist[nb] then
        dist[nb] = d
        n = n + 1
        frontier[n] = nb
      end
    end
  end
  return dist[size * size] or -1
end

local workers = WORKERS and WORKERS > 0 and WORKERS or lmp.cpu_count()
WORKERS = workers                -- the host reads back the pool's size
pool = lmp.Pool{processes = workers}
pool:apply(shortest_path, {2, 0})   -- while loading: the function is pickled once

local opts = {callback = path_found, error_callback = path_failed}

function request_path(seed)
  pool:apply_async(shortest_path, {SIZE, seed}, opts)
end
