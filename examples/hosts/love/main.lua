-- examples/hosts/love/main.lua: a LOVE game that keeps its frame rate while
-- an lmp.Pool generates its world. Debian's love (11.4) embeds LuaJIT, so
-- it loads the `make LUA=luajit` build of lmp.
--
--   make LUA=luajit
--   love examples/hosts/love
--
-- Test mode (what spec/13-hosts_spec.lua runs): headless (see conf.lua),
-- prints one summary line on stdout and quits.
--
--   LMP_HOSTS_TEST=1 SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy timeout 60 love examples/hosts/love
--
-- The map is 16 x 16 chunks of terrain; each chunk is a job for the pool
-- (value noise, then smoothing passes: a few ms of CPU). Each frame,
-- love.update calls pool:poll(0), which takes the chunks that came back,
-- runs their callbacks (which turn them into images) and returns at once:
-- it never waits for a worker. The pool keeps two chunks per worker in
-- flight until the map is done. The HUD shows the frame rate, the worst
-- frame and the chunks done, and a square bounces: it would stutter if a
-- frame ever waited for the pool.
--
-- What the workers run: the pool forks the game (lmp's default start
-- method). This is reliable because a forked worker runs only Lua: fork
-- copies only the calling thread (LOVE's and SDL's other threads stay
-- behind), lmp resets signal handlers and the signal mask in the child,
-- and the worker loops on its task channel in the copied Lua state, then
-- ends with _exit, so none of LOVE's shutdown runs in it. lmp refuses to
-- fork only while lmp's own threads run (lmp.ThreadPool), never because
-- of the host's threads. The rule that follows: task functions compute and
-- return plain data; they must not call love.* (a worker has no window,
-- and the copied engine may hold locks of threads that are gone). The
-- other start method, spawn, runs `/proc/self/exe -e <boot>`: here love,
-- which does not speak lmp. To use it anyway, point it at a LuaJIT
-- interpreter first (the lmp runtime built for LuaJIT, or Debian's luajit):
--   require("lmp.process").set_executable(build .. "/bin/lmp")
-- and give the Pool `context = lmp.get_context("spawn")` (slower to start,
-- nothing of the game inherited).

---------------------------------------------------------------- finding lmp
-- The two lines a LuaJIT host needs (docs/api/embed.md): lmp's Lua files
-- and the directory that holds lmp/core.so. LMP_ROOT and LMP_BUILD
-- override where this game's place says they are.
local root = os.getenv("LMP_ROOT") or (love.filesystem.getSource() .. "/../../..")
local build = os.getenv("LMP_BUILD") or (root .. "/build/luajit")
package.path = root .. "/lua/?.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local lmp = require "lmp"

local TEST = os.getenv("LMP_HOSTS_TEST") ~= nil
local CHUNKS, SIZE = 16, 48               -- 16 x 16 chunks of 48 x 48 cells

---------------------------------------------------------------- the job
-- One chunk of terrain: heights in [0, 1], row by row. Value noise over
-- the whole map (so chunks meet seamlessly), then `passes` box blurs.
-- min_seconds (test mode) keeps a job going at least that long, so that
-- the test sees frames while the pool computes on any machine.
local function make_chunk(cx, cy, size, seed, passes, min_seconds)
  local start = lmp.time()
  local function hash(x, y)               -- integer hash, exact in doubles
    local h = (x * 1619 + y * 31337 + seed * 1013) % 65521
    for _ = 1, 3 do h = (h * h + 7919) % 65521 end
    return h / 65521
  end
  local function noise(x, y)
    local ix, iy = math.floor(x), math.floor(y)
    local fx, fy = x - ix, y - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    local a, b = hash(ix, iy), hash(ix + 1, iy)
    local c, d = hash(ix, iy + 1), hash(ix + 1, iy + 1)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy
  end
  local h
  repeat
    h = {}
    for y = 0, size - 1 do
      for x = 0, size - 1 do
        local wx, wy, v, amp, freq = cx * size + x, cy * size + y, 0, 0.5, 1 / 96
        for _ = 1, 6 do
          v, amp, freq = v + amp * noise(wx * freq, wy * freq), amp / 2, freq * 2
        end
        h[y * size + x + 1] = v
      end
    end
    for _ = 1, passes do                  -- smoothing: the costly part
      local g = {}
      for y = 0, size - 1 do
        for x = 0, size - 1 do
          local s, k = 0, 0
          for dy = -1, 1 do
            for dx = -1, 1 do
              local v = h[(y + dy) * size + (x + dx) + 1]
              if v and x + dx >= 0 and x + dx < size then s, k = s + v, k + 1 end
            end
          end
          g[y * size + x + 1] = s / k
        end
      end
      h = g
    end
  until not min_seconds or lmp.time() - start >= min_seconds
  return {cx = cx, cy = cy, heights = h}
end

---------------------------------------------------------------- the game
local pool, todo, in_flight, done = nil, {}, 0, 0
local images = {}                          -- "cx,cy" -> Image
local frames, frames_busy, worst_frame, worst_poll, t_start = 0, 0, 0, 0, nil
local summary_printed = false

local function color(v)                    -- water, sand, grass, rock, snow
  if v < 0.42 then return 0.1, 0.25, 0.3 + v end
  if v < 0.46 then return 0.8, 0.75, 0.5 end
  if v < 0.58 then return 0.2, 0.35 + v * 0.5, 0.15 end
  if v < 0.66 then return 0.45, 0.4, 0.35 end
  return 0.95, 0.95, 0.95
end

local function on_chunk(c)
  in_flight, done = in_flight - 1, done + 1
  if not love.graphics then return end     -- headless (test mode)
  local img = love.image.newImageData(SIZE, SIZE)
  for i, v in ipairs(c.heights) do
    local r, g, b = color(v)
    img:setPixel((i - 1) % SIZE, math.floor((i - 1) / SIZE), r, g, b, 1)
  end
  images[c.cx .. "," .. c.cy] = love.graphics.newImage(img)
end

local function on_error(e)
  in_flight = in_flight - 1
  print("lmp: chunk failed: " .. tostring(e))
end

-- Runs in each worker as it starts: lowers its priority (nice 10), so
-- that the frame loop gets a core as soon as it wakes, even while every
-- core computes chunks (LuaJIT's ffi: the host's Lua is LuaJIT).
local function lower_priority()
  local ffi = require "ffi"
  pcall(ffi.cdef, "int setpriority(int which, int who, int prio);")
  ffi.C.setpriority(0, 0, 10)              -- PRIO_PROCESS, this process
end

function love.load()
  -- binary codec: a chunk is 2,304 floats, which JSON would have to carry
  -- as tagged strings to keep them exact (docs/api/pickle.md): binary
  -- decodes them several times faster, in the frame that takes them in.
  pool = lmp.Pool{processes = TEST and 2 or lmp.cpu_count(), codec = "binary",
                  initializer = lower_priority}
  local n = TEST and 8 or CHUNKS * CHUNKS  -- test mode: 8 chunks, 2 workers
  for i = 0, n - 1 do todo[#todo + 1] = {i % CHUNKS, math.floor(i / CHUNKS)} end
  t_start = lmp.time()
end

local function summary()
  summary_printed = true
  io.stdout:write(string.format("lmp-hosts love chunks=%d frames=%d frames_busy=%d "
    .. "seconds=%.3f max_poll_ms=%.3f worst_frame_ms=%.3f\n", done, frames,
    frames_busy, lmp.time() - t_start, worst_poll * 1000, worst_frame * 1000))
  io.stdout:flush()
end

function love.update(dt)
  local t0 = lmp.time()
  local busy = in_flight > 0
  pool:poll(0)                             -- never waits for a worker
  worst_poll = math.max(worst_poll, lmp.time() - t0)
  while todo[1] and in_flight < 2 * lmp.cpu_count() do
    local c = table.remove(todo, 1)
    pool:apply_async(make_chunk, {c[1], c[2], SIZE, 7, TEST and 1 or 12, TEST and 0.1 or nil},
      {callback = on_chunk, error_callback = on_error})
    in_flight = in_flight + 1
  end
  frames = frames + 1
  if busy then frames_busy = frames_busy + 1 end
  -- the first frames load LOVE's font and shaders: not the pool's doing
  if frames > 10 then worst_frame = math.max(worst_frame, dt) end
  if TEST and not todo[1] and in_flight == 0 and not summary_printed then
    summary()
    love.event.quit(0)
  end
end

function love.draw()
  local px = love.graphics.getWidth() / (CHUNKS * SIZE)
  love.graphics.setColor(1, 1, 1)
  for key, img in pairs(images) do
    local cx, cy = key:match("(%d+),(%d+)")
    love.graphics.draw(img, cx * SIZE * px, cy * SIZE * px, 0, px, px)
  end
  local t = love.timer.getTime()           -- the bouncing square
  love.graphics.setColor(1, 0.2, 0.2)
  love.graphics.rectangle("fill", 364 + 300 * math.sin(t * 2), 364 + 300 * math.cos(t * 3), 40, 40)
  love.graphics.setColor(0, 0, 0, 0.6)
  love.graphics.rectangle("fill", 0, 0, 768, 24)
  love.graphics.setColor(1, 1, 1)
  love.graphics.print(string.format("%d fps   worst frame %.1f ms   longest poll(0) %.2f ms"
    .. "   chunks %d/%d   workers %d", love.timer.getFPS(), worst_frame * 1000,
    worst_poll * 1000, done, CHUNKS * CHUNKS, lmp.cpu_count()), 6, 5)
end

function love.quit()
  if pool then pool:terminate() end        -- workers killed and reaped
  return false
end
