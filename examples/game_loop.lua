-- game_loop.lua: a 60 Hz loop that keeps ticking while a pool computes.
--
--   lmp examples/game_loop.lua [seconds] [workers]
--
-- Each frame the loop polls the pool without blocking (pool:poll(0)),
-- applies finished results through callbacks, keeps the pool saturated
-- with "path-finding" jobs, and sleeps until the next frame. It prints
-- the worst frame time: the time the loop's own work took in a frame.
local lmp = require "lmp"

local seconds = tonumber(arg and arg[1]) or 3
local nworkers = tonumber(arg and arg[2]) or lmp.cpu_count()
local FRAME = 1 / 60

-- A CPU-bound job: a breadth-first search on a grid with walls.
local function find_path(size, seed)
  local walls, dist, queue = {}, {}, {1}
  local x = seed
  for i = 1, size * size do
    x = (x * 1103515245 + 12345) % 2147483648
    walls[i] = (x % 5 == 0) and i ~= 1 and i ~= size * size
  end
  dist[1] = 0
  local head = 1
  while queue[head] do
    local c = queue[head]
    head = head + 1
    local r, col = math.floor((c - 1) / size), (c - 1) % size
    for _, n in ipairs{r > 0 and c - size, r < size - 1 and c + size,
                       col > 0 and c - 1, col < size - 1 and c + 1} do
      if n and not walls[n] and not dist[n] then
        dist[n] = dist[c] + 1
        queue[#queue + 1] = n
      end
    end
  end
  return dist[size * size] or -1
end

local pool = lmp.Pool{processes = nworkers}
local in_flight, solved, frames, worst = 0, 0, 0, 0
local function on_result() in_flight, solved = in_flight - 1, solved + 1 end

local start = lmp.time()
local next_frame = start
while lmp.time() - start < seconds do
  local t0 = lmp.time()
  pool:poll(0)                                    -- never blocks
  while in_flight < nworkers * 2 do               -- keep the pool saturated
    pool:apply_async(find_path, {120, frames * 7 + in_flight}, {callback = on_result})
    in_flight = in_flight + 1
  end
  local work = lmp.time() - t0
  if work > worst then worst = work end
  frames = frames + 1
  next_frame = next_frame + FRAME
  local left = next_frame - lmp.time()
  if left > 0 then lmp.sleep(left) else next_frame = lmp.time() end
end
pool:terminate()

print(string.format("%d frames in %.1f s (%.1f fps), %d paths solved by %d workers",
  frames, lmp.time() - start, frames / (lmp.time() - start), solved, nworkers))
print(string.format("worst frame: %.2f ms (budget %.2f ms)", worst * 1000, FRAME * 1000))
