--- lmp.redis_worker: the loop of `lmp worker` (see lua/lmp/cli.lua).
--
-- One consumer of the queue's group per `lmp worker` process; the tasks
-- run in a local lmp.Pool of `concurrency` processes, so a task that
-- crashes its process costs one delivery, not the worker. Two Redis
-- connections: `rd` holds the blocking XREADGROUP (sent, then polled
-- with the pool's fd), `wr` runs the scripts (reap, commit, fail,
-- heartbeat). Every wait is bounded by the next heartbeat or reap.
local core = require "lmp.core"
local R = require "lmp.c.redis"
local RM = require "lmp.redis"
local RA = require "lmp.redis_auth"
local pickle = require "lmp.pickle"

local W = {}
local GROUP = "lmp"

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("*l") or "localhost"
  if f then f:close() end
  return h
end

-- The fields of a task entry (see lmp.redis_scripts): t, h, f, a and,
-- when signed, s.
local function fields(list)
  if list[1] == "t" and list[3] == "h" and list[5] == "f" and list[7] == "a"
      and (list[9] == nil or list[9] == "s") then
    return list[2], list[4], list[6], list[8], list[10]
  end
  local t = {}
  for i = 1, #list - 1, 2 do t[list[i]] = list[i + 1] end
  if not t.h then     -- an entry queued by lmp before the header (one field each)
    t.h = string.format("%s %s %s %s %s %s %s", t.c or 1, t.s or 0, t.m or 3,
      t.ttl or 3600000, t.v or 30000, t.x or 4194304, t.e or 0)
    return t.t, t.h, t.f, t.a, nil
  end
  return t.t, t.h, t.f, t.a, t.s
end

local Worker = {}
Worker.__index = Worker

function Worker:log(fmt, ...)
  if not self.quiet then
    io.stderr:write(string.format("lmp worker %s: " .. fmt .. "\n", self.me, ...))
    io.stderr:flush()
  end
end

-- Times derived from the queue's visibility timeout (ms, from its cfg).
function Worker:_set_vt(ms)
  ms = tonumber(ms) or 30000
  self.vt_ms = ms
  local vt = ms / 1000
  self.hb_every = math.max(0.05, math.min(vt / 3, 5))
  self.reap_every = math.max(0.05, math.min(vt / 4, 5))
  self.block_ms = math.max(10, math.floor(math.min(self.reap_every, 1) * 1000))
end

function Worker:_reconnect_rd()
  local ok, e = pcall(self.rd.reconnect, self.rd, math.min(self.hb_every, 1))
  if not ok and core.is_error(e, "interrupted") then error(e, 0) end
  if not ok and core.is_error(e, "auth") then error(e, 0) end
  return ok
end

-- The parsed header of a task ("c s m ttl v x e"), cached by its text:
-- one caller's tasks share a few.
function Worker:_header(h)
  local p = self.headers[h]
  if p then return p end
  local c, s, _, ttl, v, x, e = (h or ""):match("^(%d+) (%d) (%d+) (%d+) (%d+) (%d+) (%d)$")
  p = {c = tonumber(c) or 1, s = s == "1", ttl = ttl or "3600000", v = tonumber(v),
       x = tonumber(x) or 4 * 1024 * 1024, e = e == "1"}
  if self.nheaders >= 256 then self.headers, self.nheaders = {}, 0 end
  self.headers[h or ""], self.nheaders = p, self.nheaders + 1
  return p
end

-- Hands a delivered entry to the local pool.
function Worker:_submit(id, d, flist)
  if self.inflight[id] then return end        -- already ours (redelivered to us)
  local tid, h, f, a, sig = fields(flist)
  local key
  if self.ring then                           -- nothing is parsed before this
    key = RA.check_task(self.ring, self.queue, tid, h, f, a, sig)
    if not key then return self:_refuse(id, d, tid, sig) end
  end
  local hd = self:_header(h)
  -- The task carries its queue's visibility timeout: a worker that started
  -- before the pool set it learns it now, not at its next reap.
  local v = hd.v
  if v and v ~= self.vt_ms then
    self:_set_vt(v)
    self.next_hb = math.min(self.next_hb, core.time() + self.hb_every)
    self.next_reap = math.min(self.next_reap, core.time() + self.reap_every)
  end
  tid = tid or ""
  local rec = {id = id, d = d, t = tid, c = RM._caller_of(tid), ttl = hd.ttl, e = hd.e, key = key}
  self.inflight[id] = rec
  self.ninflight = self.ninflight + 1
  self.taken = self.taken + 1
  local ok, err = pcall(self.pool.apply_async, self.pool, RM._run_task,
    {f or "", a or "", hd.c, hd.s, hd.x, self.me}, {
      callback = function(val) self.done[#self.done + 1] = rec rec.v = val end,
      error_callback = function(e)
        self.failed[#self.failed + 1] = {rec, tostring(e.message or e), ""}
      end})
  if not ok then
    self.failed[#self.failed + 1] = {rec, "could not start the task: " .. tostring(err), ""}
  end
end

-- An entry whose signature does not verify: dead-lettered at once with
-- kind "auth", never decoded nor run; its caller, if any, is told.
function Worker:_refuse(id, d, tid, sig)
  local why = sig and "its signature does not match any authkey of this worker"
    or "it is not signed and this worker requires an authkey"
  self.refused = self.refused + 1
  self:log("refused entry %s (task %s): %s", id, type(tid) == "string" and tid:sub(1, 80) or "?", why)
  local rec = {id = id, d = d, t = type(tid) == "string" and tid or "", final = true, kind = "auth"}
  self.inflight[id] = rec
  self.ninflight = self.ninflight + 1
  self.failed[#self.failed + 1] = {rec, "auth: refused: " .. why, ""}
end

function Worker:_take(entries)
  for _, e in ipairs(entries) do
    if type(e) == "table" and e[2] then self:_submit(e[1], e[3] or 1, e[2]) end
  end
end

function Worker:_free()
  if self.draining then return 0 end
  local free = self.capacity - self.ninflight
  if self.max_tasks then free = math.min(free, self.max_tasks - self.taken) end
  return math.max(0, free)
end

-- Reclaims entries idle past the visibility timeout (dead-lettering
-- those past their deliveries) into free slots.
function Worker:_reap()
  local vt = self.wr:call("HGET", self.k.cfg, "vt")
  if vt then self:_set_vt(vt) end
  self.next_reap = core.time() + self.reap_every
  local free = self:_free()
  if free == 0 then return end
  local r = self.wr:eval("fetch", {self.k.tasks, self.k.dead, self.k.err},
    {GROUP, self.me, self.vt_ms, free, self.cursor, 0, self.k.prefix})
  self.cursor = r[1]
  if self.debug then self:log("reap vt=%d free=%d got=%d next=%s", self.vt_ms, free, #r - 1, r[1]) end
  for i = 2, #r do
    local e = r[i]
    self:_submit(e[1], e[2], e[3])
  end
end

function Worker:_retire(rec)
  if self.inflight[rec.id] == rec then
    self.inflight[rec.id] = nil
    self.ninflight = self.ninflight - 1
  end
end

local COMMIT_MAX = 500      -- results per COMMIT (5 arguments each)

-- Commits up to COMMIT_MAX finished results in one script call, sorted
-- by caller (see COMMIT in lmp.redis_scripts); they leave self.done only
-- once committed (an interrupted call keeps them).
function Worker:_commit()
  local done, before = self.done, RM._id_before
  local m = math.min(#done, COMMIT_MAX)
  local groups, callers, fails, lo, hi = {}, {}, {}, nil, nil
  for i = 1, m do
    local rec = done[i]
    local v = rec.v
    if rec.e and v:sub(1, 1) == "E" then       -- retry_errors: a failure
      local okl, e = pcall(pickle.loads, v:sub(2), {functions = false})
      local perr = v:sub(2)
      if rec.key then perr = RA.sign_error(rec.key, self.queue, rec.t, perr) end
      fails[#fails + 1] = {rec, okl and tostring(e.message) or "task raised", perr}
    else
      if rec.key then rec.v = RA.sign_result(rec.key, self.queue, rec.t, v) end
      local grp = groups[rec.c]
      if not grp then
        grp = {ttl = rec.ttl}
        groups[rec.c] = grp
        callers[#callers + 1] = rec.c
      elseif tonumber(rec.ttl) > tonumber(grp.ttl) then
        grp.ttl = rec.ttl
      end
      grp[#grp + 1] = rec
      if not lo or before(rec.id, lo) then lo = rec.id end
      if not hi or before(hi, rec.id) then hi = rec.id end
    end
  end
  if lo then
    local args, n, recs = {GROUP, self.me, self.k.prefix, lo, hi}, 5, {}
    for _, cid in ipairs(callers) do
      local grp = groups[cid]
      args[n + 1], args[n + 2], args[n + 3] = cid, grp.ttl, #grp
      n = n + 3
      for _, rec in ipairs(grp) do
        args[n + 1], args[n + 2], args[n + 3], args[n + 4] = rec.id, rec.d, rec.t, rec.v
        n = n + 4
        recs[#recs + 1] = rec
      end
    end
    local r = self.wr:eval("commit", {self.k.tasks, self.k.err}, args)
    for i, rec in ipairs(recs) do
      self:_retire(rec)
      if r[i] == 1 then self.processed = self.processed + 1
      else self.stale = self.stale + 1 end
    end
  end
  for _, f in ipairs(fails) do self.failed[#self.failed + 1] = f end
  local rest = {}
  for i = m + 1, #done do rest[#rest + 1] = done[i] end
  self.done = rest
end

function Worker:_flush()
  while #self.done > 0 do self:_commit() end
  while #self.failed > 0 do
    local f = self.failed[1]
    local rec = f[1]
    local r = self.wr:eval("fail", {self.k.tasks, self.k.dead, self.k.err},
      {GROUP, self.me, self.k.prefix, rec.id, rec.d, f[2], f[3], rec.final and 1 or 0,
       rec.kind or ""})
    table.remove(self.failed, 1)
    self:_retire(rec)
    if r == "dead" and not rec.final then
      self:log("task %s dead-lettered after %s deliveries: %s", rec.t, rec.d, f[2])
    end
  end
end

function Worker:_heartbeat(expire)
  self.next_hb = core.time() + self.hb_every
  local info = string.format("host=%s pid=%d concurrency=%d processed=%d inflight=%d started=%d",
    self.host, self.pid, self.concurrency, self.processed, self.ninflight, self.t0)
  local args = {GROUP, self.me, expire or math.floor(self.hb_every * 3000) + 1000, info}
  local recs = {}
  for _, rec in pairs(self.inflight) do
    recs[#recs + 1] = rec
    args[#args + 1] = rec.id
    args[#args + 1] = rec.d
  end
  local r = self.wr:eval("heartbeat", {self.k.tasks, self.k.workers, self.k.winfo}, args)
  for i, rec in ipairs(recs) do
    if r[i] == 0 and not rec.lost then
      rec.lost = true                  -- reclaimed by another worker: ours is stale
      self:log("task %s was reclaimed by another worker", tostring(rec.t))
    end
  end
end

-- One turn: fetch, wait, collect, commit, heartbeat.
function Worker:_turn()
  local now = core.time()
  if now >= self.next_reap then self:_reap() end
  local free = self:_free()
  if free > 0 and not self.reading then
    local ok, e = pcall(self.rd.send, self.rd, "XREADGROUP", "GROUP", GROUP, self.me,
      "COUNT", free, "BLOCK", self.block_ms, "STREAMS", self.k.tasks, ">")
    if ok then self.reading = true
    elseif core.is_error(e, "interrupted") then error(e, 0)
    else self:_reconnect_rd() end
  end
  local fds = {self.pool:fileno()}
  if self.reading then fds[2] = self.rd:fileno() end
  local wait = math.max(0, math.min(self.next_hb, self.next_reap) - core.time())
  if #self.done + #self.failed == 0 then R.wait(fds, wait) end
  if self.reading then
    local ok, got, reply = pcall(self.rd.recv, self.rd, 0)
    if not ok then
      if core.is_error(got, "interrupted") then error(got, 0) end
      self.reading = false
      self:_reconnect_rd()
    elseif got then
      self.reading = false
      if type(reply) == "table" and reply[1] then self:_take(reply[1][2]) end
    end
  end
  self.pool:poll(0)
  self:_flush()
  if core.time() >= self.next_hb then self:_heartbeat() end
end

function Worker:_finished()
  if self.max_tasks and self.taken >= self.max_tasks then self.draining = true end
  return self.draining and self.ninflight == 0 and not self.reading
      and #self.done + #self.failed == 0
end

--- run(opts) -> exit status. opts: url, queue, concurrency, max_tasks,
-- script, prefetch, quiet, timeout, authkey, authkey_file, insecure
-- (see lmp.redis_auth: a key ring checks every task before it is read).
function W.run(opts)
  local lmp = require "lmp"
  local P = require "lmp.process"
  local ring = RA.keyring(opts.authkey, opts.authkey_file)
  RA.check_policy(opts.url, ring, opts.insecure, "lmp worker")
  local self = setmetatable({
    ring = ring, queue = opts.queue, refused = 0,
    k = RM._keys(opts.queue), concurrency = opts.concurrency or P.cpu_count(),
    max_tasks = opts.max_tasks, quiet = opts.quiet, host = hostname(),
    pid = P.current_process().pid, inflight = {}, ninflight = 0, taken = 0,
    processed = 0, stale = 0, done = {}, failed = {}, cursor = "0-0",
    next_reap = 0, next_hb = 0, t0 = os.time(), headers = {}, nheaders = 0,
  }, Worker)
  self.me = string.format("%s:%d:%s", self.host, self.pid, R.random_hex(3))
  self.debug = os.getenv("LMP_REDIS_DEBUG") ~= nil
  self.capacity = opts.prefetch or self.concurrency * 2
  self:_set_vt(30000)
  local copts = {timeout = opts.timeout or 5, reconnect_timeout = 1e9}
  self.wr = RM.client(opts.url, copts)
  self.rd = R.connect(opts.url, {timeout = opts.timeout or 5})
  self.wr.on_reconnect_start = function(e)
    self:log("lost Redis (%s); reconnecting", tostring(e.message or e))
  end
  self.wr.on_reconnect = function(c)
    RM._ensure_group(c, self.k)
    self:log("reconnected to Redis")
  end
  RM._ensure_group(self.wr, self.k)
  local init
  if opts.script then
    local path = opts.script
    init = function() dofile(path) end
  end
  self.pool = lmp.Pool{processes = self.concurrency, initializer = init, codec = "binary"}
  self:log("serving queue %s with %d processes%s", opts.queue, self.concurrency,
    ring and string.format(" (tasks must be signed: %d key(s))", #ring.keys) or "")
  local interrupts, status = 0, 0
  while not self:_finished() do
    local ok, e = pcall(self._turn, self)
    if not ok then
      if core.is_error(e, "interrupted") then
        interrupts = interrupts + 1
        if e.signal == 2 and interrupts >= 2 then
          self:log("second interrupt: exiting now")
          status = 130
          break
        end
        if not self.draining then
          self:log("draining: finishing %d task(s) in hand (interrupt again to exit now)",
            self.ninflight)
        end
        self.draining = true
        status = 128 + (e.signal or 15)
        if e.signal == 15 then status = 0 end
      else
        pcall(self.pool.terminate, self.pool)
        error(e, 0)
      end
    end
  end
  if status == 130 then
    pcall(self.pool.terminate, self.pool)
  else
    self.pool:close()
    pcall(self.pool.join, self.pool, 5)
  end
  local okh, eh = pcall(self._heartbeat, self, 0)   -- unregister
  if not okh then self:log("could not unregister: %s", tostring(eh)) end
  pcall(function()                            -- forget the consumer if it holds nothing
    local p = self.wr:call("XPENDING", self.k.tasks, GROUP, "-", "+", 1, self.me)
    if #p == 0 then self.wr:call("XGROUP", "DELCONSUMER", self.k.tasks, GROUP, self.me) end
  end)
  pcall(self.rd.close, self.rd)
  pcall(self.wr.close, self.wr)
  self:log("stopped: %d task(s) done, %d stale result(s) dropped, %d entr%s refused", self.processed,
    self.stale, self.refused, self.refused == 1 and "y" or "ies")
  return status
end

return W
