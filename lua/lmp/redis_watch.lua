--- lmp.redis_watch: `lmp workers --watch [SECONDS]` redraws a compact
-- table of a queue and its live workers until interrupted (like top);
-- `lmp workers --json` prints the same data once as JSON (with --watch,
-- one JSON document per line and refresh).
--
-- The data come from lmp.redis's stats(): counts, per-shard counts when
-- the queue has shards, and each worker's heartbeat info (host, pid,
-- concurrency, processed, inflight, started, hb = its heartbeat period in
-- ms). Tasks/s is the change of `processed` between two refreshes.
local core = require "lmp.core"
local cjson = require "cjson"

local M = {}

-- Seconds since a worker's last heartbeat: each heartbeat sets its entry
-- to expire 3 * hb + 1 s later (lmp.redis_worker), by Redis's clock.
local function heartbeat_age(w)
  local hb, left = tonumber(w.hb), tonumber(w.expires_in)
  if not hb or not left then return nil end
  return math.max(0, (math.floor(hb * 3) + 1000) / 1000 - left)
end

--- data(queue, stats, prev, now) -> a plain table (see docs/api/redis.md).
-- prev (a table kept between calls) remembers each worker's processed
-- count and the time of the previous refresh.
function M.data(queue, s, prev, now)
  local d = {queue = queue, time = os.time(), waiting = s.waiting, pending = s.pending,
    dead = s.dead, length = s.length, workers = {}}
  if type(s.shards) == "table" then
    d.shards = {}
    for i, sh in ipairs(s.shards) do
      d.shards[i] = {name = sh.name, waiting = sh.waiting, pending = sh.pending, dead = sh.dead,
        length = sh.length}
    end
  end
  local seen = {}
  for i, w in ipairs(s.workers or {}) do
    local p = prev and prev[w.name]
    local processed = tonumber(w.processed)
    local rate
    if p and processed and now > p.t then rate = math.max(0, (processed - p.n) / (now - p.t)) end
    d.workers[i] = {name = w.name, host = w.host, pid = tonumber(w.pid),
      concurrency = tonumber(w.concurrency), processed = processed,
      in_hand = tonumber(w.inflight), started = tonumber(w.started),
      heartbeat_age = heartbeat_age(w), tasks_per_s = rate}
    seen[w.name] = {n = processed or 0, t = now}
  end
  if prev then
    for k in pairs(prev) do prev[k] = nil end
    for k, v in pairs(seen) do prev[k] = v end
  end
  return d
end

-- cjson encodes an empty table as {}: lists are spliced in by hand.
local function list_json(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = cjson.encode(v) end
  return "[" .. table.concat(parts, ",") .. "]"
end

--- json(d) -> one line of JSON.
function M.json(d)
  local workers, shards = d.workers, d.shards
  d.workers, d.shards = nil, nil
  local s = cjson.encode(d)
  d.workers, d.shards = workers, shards
  s = s:sub(1, -2) .. ',"workers":' .. list_json(workers)
  if shards then s = s .. ',"shards":' .. list_json(shards) end
  return s .. "}"
end

local function num(v, fmt)
  if v == nil then return "-" end
  return string.format(fmt, v)
end

--- text(d, every) -> the table, lines joined by "\n".
function M.text(d, every)
  local out = {
    string.format("lmp workers: queue %s  %s%s", d.queue, os.date("%Y-%m-%d %H:%M:%S", d.time),
      every and string.format("  (every %gs, Ctrl-C quits)", every) or ""),
    string.format("waiting %d  pending %d  dead %d  workers %d", d.waiting, d.pending, d.dead,
      #d.workers),
  }
  if d.shards and #d.shards > 1 then
    for _, sh in ipairs(d.shards) do
      out[#out + 1] = string.format("  shard {%s}: waiting %d  pending %d  dead %d",
        tostring(sh.name), sh.waiting or 0, sh.pending or 0, sh.dead or 0)
    end
  end
  out[#out + 1] = string.format("%-20s %8s %9s %7s %9s %8s", "HOST", "PID", "TASKS/S",
    "IN HAND", "DONE", "LAST HB")
  for _, w in ipairs(d.workers) do
    out[#out + 1] = string.format("%-20s %8s %9s %7s %9s %8s", tostring(w.host or "?"):sub(1, 20),
      num(w.pid, "%d"), num(w.tasks_per_s, "%.1f"), num(w.in_hand, "%d"),
      num(w.processed, "%d"), num(w.heartbeat_age, "%.1fs"))
  end
  return table.concat(out, "\n")
end

--- run(o, fetch, cl) -> exit status. fetch() -> stats; cl: the client
-- (closed here). o.watch: seconds between refreshes (nil: once); o.json.
function M.run(o, fetch, cl)
  if not o.watch then
    local ok, s = pcall(fetch)
    pcall(cl.close, cl)
    if not ok then error(s, 0) end
    local d = M.data(o.queue, s, nil, core.time())
    print(o.json and M.json(d) or M.text(d))
    return 0
  end
  -- a failed refresh reconnects for up to one interval, then shows the error
  cl.reconnect_timeout = math.max(1, o.watch)
  local tty = require("lmp.c.sys").isatty(1)
  local prev, first = {}, true
  local ok, e = pcall(function()
    while true do
      local okf, s = pcall(fetch)
      if not okf and core.is_error(s, "interrupted") then error(s, 0) end
      local frame = okf and M.data(o.queue, s, prev, core.time())
      frame = not okf and "lmp workers: " .. tostring(type(s) == "table" and s.message or s)
        or o.json and M.json(frame) or M.text(frame, o.watch)
      if o.json then io.stdout:write(frame, "\n")
      elseif tty then io.stdout:write("\27[H\27[2J", frame, "\n")
      else io.stdout:write(first and "" or "\n", frame, "\n") end
      io.stdout:flush()
      first = false
      core.sleep(o.watch)
    end
  end)
  pcall(cl.close, cl)
  if ok or core.is_error(e, "interrupted") then return 0 end
  error(e, 0)
end

return M
