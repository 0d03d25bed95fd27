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
local RC = require "lmp.redis_cluster"
local pickle = require "lmp.pickle"

local W = {}
local GROUP = "lmp"
local unpack = table.unpack or unpack

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

-- The key of an entry in self.inflight: shards' stream ids may be equal
-- (sh.ikp: "" for the queue's own stream, else the shard's tag and "|").
local function ikey(sh, id)
  return sh.ikp .. id
end

-- Hands a delivered entry (of shard sh, default the first) to the local pool.
function Worker:_submit(id, d, flist, sh)
  sh = sh or self.shards[1]
  local ik = ikey(sh, id)
  if self.inflight[ik] then return end        -- already ours (redelivered to us)
  local tid, h, f, a, sig = fields(flist)
  local key
  if self.ring then                           -- nothing is parsed before this
    -- signed with the queue's name, whichever shard holds the entry
    key = RA.check_task(self.ring, self.queue, tid, h, f, a, sig)
    if not key then return self:_refuse(id, d, tid, sig, sh) end
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
  local rec = {id = id, d = d, t = tid, c = RM._caller_of(tid), ttl = hd.ttl, e = hd.e, key = key,
    k = sh.k, ik = ik}
  self.inflight[ik] = rec
  self.ninflight = self.ninflight + 1
  self.taken = self.taken + 1
  local hist = self.hist                      -- lmp worker --metrics: run times
  if hist then rec.t0 = core.time() end
  local ok, err = pcall(self.pool.apply_async, self.pool, RM._run_task,
    {f or "", a or "", hd.c, hd.s, hd.x, self.me}, {
      callback = function(val)
        self.done[#self.done + 1] = rec rec.v = val
        if hist then hist:observe(core.time() - rec.t0) end
      end,
      error_callback = function(e)
        self.failed[#self.failed + 1] = {rec, tostring(e.message or e), ""}
      end})
  if not ok then
    self.failed[#self.failed + 1] = {rec, "could not start the task: " .. tostring(err), ""}
  end
end

-- An entry whose signature does not verify: dead-lettered at once with
-- kind "auth", never decoded nor run; its caller, if any, is told.
function Worker:_refuse(id, d, tid, sig, sh)
  local why = sig and "its signature does not match any authkey of this worker"
    or "it is not signed and this worker requires an authkey"
  self.refused = self.refused + 1
  self:log("refused entry %s (task %s): %s", id, type(tid) == "string" and tid:sub(1, 80) or "?", why)
  local rec = {id = id, d = d, t = type(tid) == "string" and tid or "", final = true, kind = "auth",
    k = sh.k, ik = ikey(sh, id)}
  self.inflight[rec.ik] = rec
  self.ninflight = self.ninflight + 1
  self.failed[#self.failed + 1] = {rec, "auth: refused: " .. why, ""}
end

function Worker:_take(entries, sh)
  for _, e in ipairs(entries) do
    if type(e) == "table" and e[2] then self:_submit(e[1], e[3] or 1, e[2], sh) end
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
  local cfg = self.wr:call("HMGET", self.k.cfg, "vt", "shards")
  if cfg[1] then self:_set_vt(cfg[1]) end
  self:_set_shards(cfg[2])
  self.next_reap = core.time() + self.reap_every
  for _, sh in ipairs(self.shards) do      -- each shard has its own cursor
    local free = self:_free()
    if free == 0 then return end
    local k = sh.k
    local r = self.wr:eval("fetch", {k.tasks, k.dead, k.err},
      {GROUP, self.me, self.vt_ms, free, sh.cursor or "0-0", 0, k.prefix})
    sh.cursor = r[1]
    if self.debug then self:log("reap %s vt=%d free=%d got=%d next=%s", sh.tag, self.vt_ms, free, #r - 1, r[1]) end
    for i = 2, #r do
      local e = r[i]
      self:_submit(e[1], e[2], e[3], sh)
    end
  end
end

-- The shards to read: the queue's shard count (HGET lmp:{queue}:cfg
-- shards, set by its callers) unless --shards fixed it. A worker that saw
-- another count keeps reading the shards of the old one too (tasks queued
-- there are still served).
function Worker:_set_shards(n)
  n = self.fixed_shards or tonumber(n) or 1
  if n == self.nshards then return end
  local have, list = {}, {}
  for _, sh in ipairs(RM._shards(self.queue, math.max(1, math.min(math.floor(n), 256)))) do
    list[#list + 1], have[sh.tag] = sh, true
  end
  for _, sh in ipairs(self.shards or {}) do
    if not have[sh.tag] then list[#list + 1], have[sh.tag] = sh, true end
  end
  for _, sh in ipairs(list) do
    sh.ikp = sh.tag == self.queue and "" or sh.tag .. "|"
    RM._ensure_group(self.wr, sh.k)
  end
  if self.lanes then self.lanes:close() end
  self.shards, self.nshards = list, n
  self.by_stream = {}
  for _, sh in ipairs(list) do self.by_stream[sh.k.tasks] = sh end
  self.lanes = RC.lanes({url = self.url, cluster = self.wr.cluster and self.wr,
    conn = self.rd_opts, connect_timeout = math.min(self.hb_every, 1)},
    RC.read_groups(self.shards, self.wr.cluster))
  self.lanes.on_error = function(_, e)
    if core.is_error(e, "remote") and tostring(e.redis):match("^NOGROUP") then
      for _, s in ipairs(self.shards) do pcall(RM._ensure_group, self.wr, s.k) end
    elseif not core.is_error(e, "remote") and not self.rd_lost then
      self.rd_lost = true
      self:log("lost a Redis read connection (%s); reconnecting", tostring(e.message or e))
    end
  end
  if #list > 1 then self:log("reading %d shard(s) of queue %s", #list, self.queue) end
end

function Worker:_retire(rec)
  if self.inflight[rec.ik] == rec then
    self.inflight[rec.ik] = nil
    self.ninflight = self.ninflight - 1
  end
end

local COMMIT_MAX = 500      -- results per COMMIT (5 arguments each)

-- Commits up to COMMIT_MAX finished results in one script call, sorted
-- by caller (see COMMIT in lmp.redis_scripts); they leave self.done only
-- once committed (an interrupted call keeps them).
function Worker:_commit()
  local done, before = self.done, RM._id_before
  local sk, batch, rest = done[1].k, {}, {}   -- one shard per call: its node runs it
  for i = 1, #done do
    local rec = done[i]
    if rec.k == sk and #batch < COMMIT_MAX then batch[#batch + 1] = rec
    else rest[#rest + 1] = rec end
  end
  local groups, callers, fails, lo, hi = {}, {}, {}, nil, nil
  for i = 1, #batch do
    local rec = batch[i]
    local v = rec.v
    if rec.e and v:sub(1, 1) == "E" then       -- retry_errors: a failure
      local okl, e = pcall(pickle.loads, v:sub(2), {functions = false})
      local perr = v:sub(2)
      if rec.key then perr = RA.sign_error(rec.key, self.queue, rec.t, perr) end
      fails[#fails + 1] = {rec, okl and tostring(e.message) or "task raised", perr}
    else
      if v:byte(1) == 69 then rec.raised = true end   -- "E": the error is its result
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
    local args, n, recs = {GROUP, self.me, sk.prefix, lo, hi}, 5, {}
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
    local r = self.wr:eval("commit", {sk.tasks, sk.err}, args)
    for i, rec in ipairs(recs) do
      self:_retire(rec)
      if r[i] == 1 then
        self.processed = self.processed + 1
        if rec.raised then self.nfailed = self.nfailed + 1 end
      else self.stale = self.stale + 1 end
    end
  end
  for _, f in ipairs(fails) do self.failed[#self.failed + 1] = f end
  self.done = rest
end

function Worker:_flush()
  while #self.done > 0 do self:_commit() end
  while #self.failed > 0 do
    local f = self.failed[1]
    local rec = f[1]
    local k = rec.k or self.k
    local r = self.wr:eval("fail", {k.tasks, k.dead, k.err},
      {GROUP, self.me, k.prefix, rec.id, rec.d, f[2], f[3], rec.final and 1 or 0,
       rec.kind or ""})
    table.remove(self.failed, 1)
    self.nfailed = self.nfailed + 1
    if r == "dead" then self.ndead = self.ndead + 1
    elseif r == "retry" then self.nretried = self.nretried + 1 end
    self:_retire(rec)
    if r == "dead" and not rec.final then
      self:log("task %s dead-lettered after %s deliveries: %s", rec.t, rec.d, f[2])
    end
  end
end

function Worker:_heartbeat(expire)
  self.next_hb = core.time() + self.hb_every
  local info = string.format(
    "host=%s pid=%d concurrency=%d processed=%d inflight=%d started=%d hb=%d", self.host,
    self.pid, self.concurrency, self.processed, self.ninflight, self.t0,
    math.floor(self.hb_every * 1000))
  expire = expire or math.floor(self.hb_every * 3000) + 1000
  -- one HEARTBEAT per shard (the worker registers in each): its entries
  local per, order = {}, {}
  local function of(k)
    local p = per[k]
    if not p then
      p = {k = k, recs = {}, args = {GROUP, self.me, expire, info}}
      per[k], order[#order + 1] = p, p
    end
    return p
  end
  for _, sh in ipairs(self.shards) do of(sh.k) end
  for _, rec in pairs(self.inflight) do
    local p = of(rec.k)
    p.recs[#p.recs + 1] = rec
    p.args[#p.args + 1] = rec.id
    p.args[#p.args + 1] = rec.d
  end
  for _, p in ipairs(order) do
    local k = p.k
    local r = self.wr:eval("heartbeat", {k.tasks, k.workers, k.winfo}, p.args)
    for i, rec in ipairs(p.recs) do
      if r[i] == 0 and not rec.lost then
        rec.lost = true                  -- reclaimed by another worker: ours is stale
        self:log("task %s was reclaimed by another worker", tostring(rec.t))
      end
    end
  end
end

-- One turn: fetch, wait, collect, commit, heartbeat.
function Worker:_turn()
  local now = core.time()
  if now >= self.next_reap then self:_reap() end
  local free, lanes = self:_free(), self.lanes
  if free > 0 then
    -- COUNT is per stream: the shards share the free slots
    local count = math.ceil(free / #self.shards)
    for i, lane in ipairs(lanes.list) do
      if lanes:ready(i) then
        local args = {"XREADGROUP", "GROUP", GROUP, self.me, "COUNT", count,
          "BLOCK", self.block_ms, "STREAMS"}
        for _, key in ipairs(lane.keys) do args[#args + 1] = key end
        for _ = 1, #lane.keys do args[#args + 1] = ">" end
        lanes:send(i, unpack(args))
      end
    end
  end
  local fds, map = {self.pool:fileno()}, {}
  lanes:fds(fds, map)
  local wake = math.min(self.next_hb, self.next_reap, self.drain_at or math.huge)
  if free > 0 then wake = math.min(wake, lanes:next_retry()) end
  local wait = math.max(0, wake - core.time())
  local ms = self.msrv
  if ms then                          -- lmp.metrics: its sockets wait here too
    ms:add_fds(fds)
    local busy = #self.done + #self.failed > 0
    ms:step(R.wait(fds, busy and 0 or math.min(wait, ms:timeout(core.time()) or wait)), core.time())
  elseif #self.done + #self.failed == 0 then R.wait(fds, wait) end
  for i = 1, #lanes.list do
    local reply = lanes:recv(i)
    if type(reply) == "table" then
      if self.rd_lost then self.rd_lost = nil self:log("read connection back") end
      for _, st in ipairs(reply) do
        local sh = self.by_stream[st[1]]
        if sh then self:_take(st[2], sh) end
      end
    end
  end
  self.pool:poll(0)
  self:_flush()
  if core.time() >= self.next_hb then self:_heartbeat() end
end

function Worker:_finished()
  if self.max_tasks and self.taken >= self.max_tasks then self.draining = true end
  return self.draining and self.ninflight == 0 and not self.lanes:busy()
      and #self.done + #self.failed == 0
end

-- Draining after an interrupt lasts at most drain_timeout seconds: the
-- reconnection loops of the command connection give up at the deadline
-- (Client.stop_at), and run exits 75 with what it could not commit.
function Worker:_drain_start()
  if self.drain_at then return end
  self.drain_at = core.time() + self.drain_timeout
  self.wr.stop_at = self.drain_at
end

function Worker:_drain_expired(status)
  if self.ninflight == 0 and #self.done + #self.failed == 0 then return status end
  self:log("drain deadline (%gs) passed with %d task(s) in hand: exiting; they are "
    .. "redelivered after the visibility timeout", self.drain_timeout, self.ninflight)
  return 75
end

-- lmp worker --metrics ADDR: GET /metrics served from _turn (lmp.metrics;
-- docs/api/redis.md "Metrics" lists them). Nothing is counted per task
-- beyond the fields below and one histogram observation.
local METRICS = {   -- name, type, help, the worker's value
  {"lmp_worker_tasks_done_total", "counter", "Results committed (a task that raised "
    .. "without retry_errors commits its error).", function(w) return w.processed end},
  {"lmp_worker_tasks_failed_total", "counter", "Task runs that failed: raised, lost "
    .. "their process, or were refused.", function(w) return w.nfailed end},
  {"lmp_worker_tasks_retried_total", "counter", "Failed runs released for another "
    .. "delivery.", function(w) return w.nretried end},
  {"lmp_worker_tasks_dead_lettered_total", "counter", "Tasks this worker moved to the "
    .. "dead-letter stream.", function(w) return w.ndead end},
  {"lmp_worker_tasks_stale_total", "counter", "Results dropped: the delivery had been "
    .. "reclaimed by another worker.", function(w) return w.stale end},
  {"lmp_worker_tasks_in_hand", "gauge", "Tasks delivered to this worker and not yet "
    .. "committed.", function(w) return w.ninflight end},
  {"lmp_worker_tasks_prefetched", "gauge", "Tasks in hand waiting for a free pool process.",
    function(w) return math.max(0, w.ninflight - #w.done - #w.failed - w.concurrency) end},
  {"lmp_worker_pool_processes", "gauge", "Processes of the worker's local pool.",
    function(w) return w.concurrency end},
  {"lmp_worker_draining", "gauge", "1 while the worker drains after SIGTERM or Ctrl-C.",
    function(w) return w.draining and 1 or 0 end},
  {"lmp_worker_task_duration_seconds", "histogram", "Seconds from handing a task to the "
    .. "local pool to its result coming back."},
  {"lmp_worker_redis_reconnects_total", "counter", "Reconnections of the worker's Redis "
    .. "command connection.", function(w) return w.wr.reconnects or 0 end},
}

function Worker:_serve_metrics(addr)
  local MX = require "lmp.metrics"
  local host, port = MX.parse_address(addr)
  self.hist = MX.histogram()
  local lab = MX.labels{queue = self.queue}
  self.msrv = MX.serve{host = host, port = port, collect = function()
    local fams = {}
    for i, m in ipairs(METRICS) do
      fams[i] = {name = m[1], type = m[2], help = m[3], labels = lab,
        value = m[4] and m[4](self), hist = not m[4] and self.hist or nil}
    end
    for _, f in ipairs(MX.process_families()) do fams[#fams + 1] = f end
    fams[#fams + 1] = {name = "process_start_time_seconds", type = "gauge",
      help = "Start time of the process since the Unix epoch, in seconds.", value = self.t0}
    return MX.format(fams)
  end}
  self:log("metrics on http://%s:%d/metrics", self.msrv.host, self.msrv.port)
end

--- run(opts) -> exit status. opts: url, queue, concurrency, max_tasks,
-- script, prefetch, quiet, timeout, authkey, authkey_file, insecure
-- (see lmp.redis_auth: a key ring checks every task before it is read),
-- metrics ("HOST:PORT": lmp.metrics), drain_timeout (s, default 30).
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
  self.nfailed, self.nretried, self.ndead = 0, 0, 0
  self.drain_timeout = opts.drain_timeout or 30
  self:_set_vt(30000)
  local copts = {timeout = opts.timeout or 5, reconnect_timeout = 1e9, tls = opts.tls}
  self.wr = opts.cluster and RC.client(opts.url, copts) or RM.client(opts.url, copts)
  -- the read connections' options (one per shard on a cluster: lanes)
  self.rd_opts = {timeout = opts.timeout or 5, tls = opts.tls}
  self.url, self.fixed_shards = opts.url, opts.shards
  self.wr.on_reconnect_start = function(e)
    self:log("lost Redis (%s); reconnecting", tostring(e.message or e))
  end
  self.wr.on_reconnect = function(c)
    for _, sh in ipairs(self.shards) do RM._ensure_group(c, sh.k) end
    self:log("reconnected to Redis")
  end
  self:_set_shards(RM._queue_shards(self.wr, self.queue))
  if opts.metrics then self:_serve_metrics(opts.metrics) end
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
    if self.drain_at and core.time() >= self.drain_at then
      status = self:_drain_expired(status)
      break
    end
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
        self:_drain_start()
        status = 128 + (e.signal or 15)
        if e.signal == 15 then status = 0 end
      elseif not (self.drain_at and core.time() >= self.drain_at) then
        -- (past the drain deadline the reconnection loop gave up: exit above)
        pcall(self.pool.terminate, self.pool)
        error(e, 0)
      end
    end
  end
  if status == 130 or status == 75 then
    pcall(self.pool.terminate, self.pool)
  else
    self.pool:close()
    pcall(self.pool.join, self.pool, 5)
  end
  local okh, eh = pcall(self._heartbeat, self, 0)   -- unregister
  if not okh then self:log("could not unregister: %s", tostring(eh)) end
  for _, sh in ipairs(self.shards) do
    pcall(function()                          -- forget the consumer if it holds nothing
      local p = self.wr:call("XPENDING", sh.k.tasks, GROUP, "-", "+", 1, self.me)
      if #p == 0 then self.wr:call("XGROUP", "DELCONSUMER", sh.k.tasks, GROUP, self.me) end
    end)
  end
  self.lanes:close()
  pcall(self.wr.close, self.wr)
  if self.msrv then self.msrv:close() end
  self:log("stopped: %d task(s) done, %d stale result(s) dropped, %d entr%s refused", self.processed,
    self.stale, self.refused, self.refused == 1 and "y" or "ies")
  return status
end

return W
