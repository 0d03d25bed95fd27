--- lmp.redis: RedisPool (the caller's side) and the worker loop that
-- `lmp worker` runs (lua/lmp/cli.lua parses the command line).
--
-- Tasks go to a Redis stream with a consumer group (one per queue);
-- results come back in a per-caller hash (task id -> value) plus a
-- list of finished task ids, both with a TTL. Every delivery is
-- identified by its attempt token (consumer, delivery count) from the
-- group's pending list, and results, failures and heartbeats are
-- committed by server-side scripts (lmp.redis_scripts) that check it.
-- See docs/api/redis.md.
local core = require "lmp.core"
local R = require "lmp.c.redis"
local S = require "lmp.redis_scripts"
local RA = require "lmp.redis_auth"
local RC = require "lmp.redis_cluster"
local pickle = require "lmp.pickle"

local M = {}
local unpack = table.unpack or unpack
local GROUP = "lmp"
local MiB = 1024 * 1024

local new_error = core.error   -- (kind, msg, fields): an error object

local function argerror(n, fname, msg)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

-- The keys of a queue, or of one of its shards: tag is the shard's hash
-- tag (lmp.redis_cluster.shard_tag); none: the queue's own keys.
local function keys_of(queue, tag)
  local p = "lmp:{" .. (tag or queue) .. "}:"
  return {prefix = p, tasks = p .. "tasks", dead = p .. "dead", err = p .. "err",
          cfg = p .. "cfg", workers = p .. "workers", winfo = p .. "winfo"}
end
M._keys = keys_of

-- The caller id of a task id ("<caller>:<seq>"), as the scripts take it.
function M._caller_of(tid)
  return tid:match("^(.*):[^:]*$") or tid
end

--- _id_before(a, b): stream id a ("ms-seq") sorts before b (numbers
-- without leading zeros: the longer is the larger; parses nothing).
function M._id_before(a, b)
  local ia, ib = a:find("-", 1, true), b:find("-", 1, true)
  if ia ~= ib then return ia < ib end
  if #a ~= #b and a:sub(1, ia) == b:sub(1, ib) then return #a < #b end
  return a < b
end

---------------------------------------------------------------- client

-- A connection that reconnects with backoff (for up to reconnect_timeout
-- seconds per failure) and runs the scripts by sha.
local Client = {}
Client.__index = Client

local function sha_of(conn, name)
  return conn:call("SCRIPT", "LOAD", S[name])
end

-- verify = false is said once per URL (as lmp.redis_auth says --insecure).
local tls_warned = {}
local function warn_no_verify(url, tls)
  if type(tls) ~= "table" or tls.verify ~= false or tls_warned[url] then return end
  tls_warned[url] = true
  local u = R.parse_url(url)
  local msg = string.format("TLS to Redis at %s:%d without certificate verification "
    .. "(verify = false, --tls-no-verify): anyone on the path can pose as the server",
    tostring(u.host), u.port)
  local ok, log = pcall(require, "lmp.log")
  if ok and log.warning then log.warning("%s", msg) else io.stderr:write(msg, "\n") end
end

--- client(url, {timeout =, connect_timeout =, reconnect_timeout =, tls =})
-- tls = {ca_file =, cert_file =, key_file =, server_name =, verify = true}
-- for a rediss:// URL (docs/api/redis.md "TLS").
function M.client(url, opts)
  opts = opts or {}
  local conn = R.connect(url, {timeout = opts.timeout or 5,
    connect_timeout = opts.connect_timeout or opts.timeout or 5, tls = opts.tls})
  warn_no_verify(url, opts.tls)
  return setmetatable({conn = conn, url = url, shas = {},
    reconnect_timeout = opts.reconnect_timeout or 30}, Client)
end

local function retryable(e)
  return core.is_error(e, "broken") or core.is_error(e, "os")
      or core.is_error(e, "timeout")
end

-- Runs f(conn) and, on a connection failure, reconnects with backoff and
-- runs it again, until reconnect_timeout has passed since the failure, or
-- until self.stop_at (a core.time(), set by a draining worker) if sooner.
function Client:run(f, ...)
  local deadline
  while true do
    local ok, a = pcall(f, self.conn, ...)
    if ok then return a end
    if not retryable(a) then error(a, 0) end
    deadline = deadline or core.time() + self.reconnect_timeout
    local left = math.min(deadline, self.stop_at or deadline) - core.time()
    if left <= 0 then error(a, 0) end
    if self.on_reconnect_start then self.on_reconnect_start(a) end
    local okr, e = pcall(self.conn.reconnect, self.conn, left)
    if not okr and not retryable(e) then error(e, 0) end
    if okr then
      self.shas = {}
      self.reconnects = (self.reconnects or 0) + 1
      if self.on_reconnect then self.on_reconnect(self) end
    end
  end
end

local function do_call(conn, ...) return conn:call(...) end
local function do_callt(conn, ...) return conn:callt(...) end
local function do_pipeline(conn, cmds) return conn:pipeline(cmds) end

function Client:call(...) return self:run(do_call, ...) end
function Client:callt(t, ...) return self:run(do_callt, t, ...) end
function Client:pipeline(cmds) return self:run(do_pipeline, cmds) end

local function do_eval(conn, self, name, nkeys, args)
  local sha = self.shas[name]
  if not sha then
    sha = sha_of(conn, name)
    self.shas[name] = sha
  end
  local ok, r = pcall(conn.call, conn, "EVALSHA", sha, nkeys, unpack(args, 1, args.n or #args))
  if ok then return r end
  if core.is_error(r, "remote") and tostring(r.redis):match("^NOSCRIPT") then
    self.shas[name] = sha_of(conn, name)
    return conn:call("EVALSHA", self.shas[name], nkeys, unpack(args, 1, args.n or #args))
  end
  error(r, 0)
end
M._do_eval = do_eval   -- (conn, client, name, nkeys, args): lmp.redis_cluster's too

--- eval(name, keys, args) runs script S[name].
function Client:eval(name, keys, args)
  local all, n = {}, 0
  for i = 1, #keys do n = n + 1 all[n] = keys[i] end
  for i = 1, #args do n = n + 1 all[n] = args[i] end
  all.n = n
  return self:run(do_eval, self, name, #keys, all)
end

function Client:close() self.conn:close() end

local function ensure_group(cl, k)
  local ok, e = pcall(cl.call, cl, "XGROUP", "CREATE", k.tasks, GROUP, "0", "MKSTREAM")
  if not ok and not (core.is_error(e, "remote") and tostring(e.redis):match("^BUSYGROUP")) then
    error(e, 0)
  end
end
M._ensure_group = ensure_group

---------------------------------------------------------------- shards

--- _shard_opts(opts, who) -> cluster (bool), shards (integer 1..256).
function M._shard_opts(opts, who)
  local k = opts.shards
  if k == nil then k = 1 end
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 or k > RC.MAX_SHARDS then
    argerror(1, who, "shards must be an integer from 1 to " .. RC.MAX_SHARDS)
  end
  return opts.cluster and true or false, math.floor(k)
end

--- _connect(url, o) -> a Client, or a cluster client when o.cluster.
function M._connect(url, o)
  if o.cluster then return RC.client(url, o) end
  return M.client(url, o)
end

--- _shards(queue, K [, caller]) -> {{i =, tag =, k = keys, notify =,
-- results =}...}: shard i's keys share the tag RC.shard_tag(queue, i, K)
-- (K = 1: the queue's own keys); notify and results: the caller's.
function M._shards(queue, n, caller)
  local out = {}
  for i = 0, n - 1 do
    local tag = RC.shard_tag(queue, i, n)
    local k = keys_of(queue, tag)
    out[i + 1] = {i = i, tag = tag, k = k,
      notify = caller and k.prefix .. "n:" .. caller, results = caller and k.prefix .. "r:" .. caller}
  end
  return out
end

--- _queue_shards(cl, queue) -> the shard count the queue's callers set
-- (HGET lmp:{queue}:cfg shards; 1 if none).
function M._queue_shards(cl, queue)
  local v = tonumber(cl:call("HGET", keys_of(queue).cfg, "shards"))
  if not v or v < 1 or v % 1 ~= 0 then return 1 end
  return math.min(math.floor(v), RC.MAX_SHARDS)
end

---------------------------------------------------------------- results

local function auth_error(tid, why)
  return new_error("auth", string.format("the result of task %s %s; not decoded", tid, why),
    {task = tid})
end

-- A result value as the caller may decode it: (value, loads options) or
-- (nil, error). With a key ring, only signed values pass ("D" and "A"
-- carry text only); without one, functions in a value are refused.
local function open_result(tid, v, ring, queue)
  local tag = v:sub(1, 1)
  if tag == "D" or tag == "A" then return v, nil end
  if not ring then
    if tag == "S" then return nil, auth_error(tid, "is signed but this RedisPool has no authkey") end
    return v, {functions = false}
  end
  if tag == "S" then
    local inner = RA.open_result(ring, queue, tid, v)
    if not inner then return nil, auth_error(tid, "failed its signature check (forged, or signed with another key)") end
    return inner, nil
  end
  if tag == "X" then
    local d, rest = v:match("^X(%d+)\n(.*)$")
    local perr = rest and RA.open_error(ring, queue, tid, rest)
    if not perr then return nil, auth_error(tid, "failed its signature check (forged, or signed with another key)") end
    return "X" .. d .. "\n" .. perr, nil
  end
  return nil, auth_error(tid, "is not signed (written by a worker without the authkey, or forged)")
end

-- Turns a result value (see lmp.redis_scripts) into (ok, value | error).
-- ring and queue: the caller's key ring (nil: none) and queue name.
local function decode_result(tid, v, ring, queue)
  if not v then
    return false, new_error("worker_lost", "the result of task " .. tid
      .. " has expired or was taken by another caller", {task = tid})
  end
  local lopts
  v, lopts = open_result(tid, v, ring, queue)
  if not v then return false, lopts end
  local tag, body = v:sub(1, 1), v:sub(2)
  if tag == "O" then return true, pickle.loads(body, lopts) end
  if tag == "E" then
    local e = pickle.loads(body, lopts)
    local kind = (e.kind == "pickle" or e.kind == "full") and e.kind or "remote"
    return false, new_error(kind, string.format("task %s raised in %s: %s", tid,
      tostring(e.worker), tostring(e.message)),
      {traceback = e.traceback, worker = e.worker, task = tid, remote_kind = e.kind,
       index = e.index})
  end
  local d, rest = body:match("^(%d+)\n(.*)$")
  if tag == "X" then
    local e = pickle.loads(rest, lopts)
    return false, new_error("remote", string.format(
      "task %s raised on each of its %s deliveries (dead-lettered): %s",
      tid, d, tostring(e.message)),
      {traceback = e.traceback, worker = e.worker, task = tid, deliveries = tonumber(d),
       dead_letter = true, remote_kind = e.kind})
  end
  if tag == "A" then
    return false, new_error("auth", string.format(
      "task %s was refused by a worker (dead-lettered): %s", tid, tostring(rest)),
      {task = tid, deliveries = tonumber(d), dead_letter = true})
  end
  return false, new_error("worker_lost", string.format(
    "task %s was delivered %s times and never finished (dead-lettered): %s",
    tid, tostring(d), tostring(rest)),
    {task = tid, deliveries = tonumber(d), dead_letter = true})
end

---------------------------------------------------------------- AsyncResult

-- Pool's AsyncResult (ready, successful, wait, get, callbacks), except
-- that a task handed to Redis cannot be cancelled: a worker may run it.
local AsyncResult = setmetatable({}, {__index = require("lmp.pool").AsyncResult})
local result_list = require("lmp.pool")._result_list
AsyncResult.__index = AsyncResult

--- cancel() -> false.
function AsyncResult:cancel() return false end

---------------------------------------------------------------- RedisPool

local RedisPool = {}
RedisPool.__index = RedisPool

local function num_opt(opts, k, dflt, min)
  local v = opts[k]
  if v == nil then return dflt end
  if type(v) ~= "number" or v ~= v or v < min then
    argerror(1, "RedisPool", k .. " must be a number >= " .. min)
  end
  return v
end

local function check_pool_opts(opts)
  if type(opts) ~= "table" then argerror(1, "RedisPool", "table expected") end
  if type(opts.url) ~= "string" then argerror(1, "RedisPool", "url must be a string") end
  local q = opts.queue or "lmp"
  if type(q) ~= "string" or q == "" or q:find("[{}%s]") then
    argerror(1, "RedisPool", "queue must be a non-empty string without braces or spaces")
  end
  local codec = pickle.resolve_codec(opts.codec)   -- nil: lmp.set_codec's default
  if not codec then argerror(1, "RedisPool", "codec must be 'json' or 'binary'") end
  local okk, ring = pcall(RA.keyring, opts.authkey, opts.authkey_file)
  if not okk then argerror(1, "RedisPool", tostring(ring)) end
  local tls_err = R.check_tls(opts.url, opts.tls)
  if tls_err then argerror(1, "RedisPool", tls_err) end
  return {
    ring = ring, insecure = opts.insecure and true or false, tls = opts.tls,
    url = opts.url, queue = q, codec = codec,
    vt = num_opt(opts, "visibility_timeout", 30, 0.01),
    max_retries = math.floor(num_opt(opts, "max_retries", 3, 1)),
    result_ttl = num_opt(opts, "result_ttl", 3600, 0.01),
    timeout = num_opt(opts, "timeout", 5, 0.01),
    connect_timeout = num_opt(opts, "connect_timeout", opts.timeout or 5, 0.01),
    reconnect_timeout = num_opt(opts, "reconnect_timeout", 30, 0),
    max_task_size = num_opt(opts, "max_task_size", 4 * MiB, 1),
    max_result_size = num_opt(opts, "max_result_size", 4 * MiB, 1),
    retry_errors = opts.retry_errors and true or false,
  }
end

--- RedisPool{url =, queue =, visibility_timeout = 30, max_retries = 3,
-- result_ttl = 3600, timeout = 5, connect_timeout =, reconnect_timeout = 30,
-- max_task_size = 4 MiB, max_result_size = 4 MiB, retry_errors = false,
-- codec =, authkey =, authkey_file =, insecure = false}: codec pickles the
-- tasks (functions and arguments); it defaults to lmp.set_codec's choice
-- (JSON unless set). Results are always JSON. With an authkey (a string
-- of 32+ bytes, or a list {new, old...} during a rotation) tasks are
-- signed and results checked (lmp.redis_auth); a Redis that is not on
-- loopback needs one unless insecure = true. cluster = true: url is a
-- seed node of a Redis Cluster (lmp.redis_cluster); shards = K spreads
-- the queue over K streams with distinct hash tags (1: the keys as ever).
function M.RedisPool(opts)
  local o = check_pool_opts(opts)
  o.cluster, o.shards = M._shard_opts(opts, "RedisPool")
  RA.check_policy(o.url, o.ring, o.insecure, "RedisPool")
  local cl = M._connect(o.url, o)
  local k = keys_of(o.queue)
  local self = setmetatable({
    o = o, cl = cl, k = k, id = R.random_hex(8), _state = "run",
    _owner_pid = require("lmp.c.proc").getpid(),
    _dumps = pickle.encoder(o.codec), seq = 0,
    tasks = {},          -- task id -> {job =, k =, first =, n =}
    reattached = {},     -- task id -> job (results polled by key)
    npending = 0, feeders = {}, headers = {}, nheaders = 0,
  }, M._pool_mt)
  self.tid_prefix = self.id .. ":"
  self.notify = k.prefix .. "n:" .. self.id
  self.results = k.prefix .. "r:" .. self.id
  self.shards = M._shards(o.queue, o.shards, self.id)
  local shards = self.shards
  cl.on_reconnect = function(c)
    for _, sh in ipairs(shards) do ensure_group(c, sh.k) end
  end
  cl.on_reconnect(cl)
  cl:call("HSET", k.cfg, "vt", math.floor(o.vt * 1000), "shards", o.shards)
  return self
end

M._pool_mt = {__index = RedisPool,
  __close = function(self) self:terminate() end,
  __tostring = function(self)
    return string.format("lmp.RedisPool(%s, queue %s, %s)", self.o.url:gsub(":[^:@/]*@", ":***@"),
      self.o.queue, self._state)
  end}

--- codec() -> "json" or "binary": how this pool pickles its tasks.
function RedisPool:codec() return self.o.codec end

function RedisPool:_forget_job() end   -- tasks are forgotten as results arrive

function RedisPool:_check_open(fname)
  if self._owner_pid ~= require("lmp.c.proc").getpid() then
    error(new_error("closed", "RedisPool belongs to another process (was it inherited by fork?)"), 3)
  end
  if self._state ~= "run" then
    error(new_error("closed", "RedisPool is " .. self._state .. " (" .. fname .. ")"), 3)
  end
end

function RedisPool:_new_job(fname, opts)
  self:_check_open(fname)
  if opts ~= nil and type(opts) ~= "table" then argerror(3, fname, "options must be a table") end
  opts = opts or {}
  for _, f in ipairs({"callback", "error_callback"}) do
    if opts[f] ~= nil and type(opts[f]) ~= "function" then
      argerror(3, fname, f .. " must be a function")
    end
  end
  return setmetatable({_pool = self, _ready = false, _callback = opts.callback,
    _error_callback = opts.error_callback}, AsyncResult)
end

-- The header of a task of n items (see lmp.redis_scripts), cached: a
-- pool's tasks share a few.
function RedisPool:_header(n, star)
  local key = star and -n or n
  local h = self.headers[key]
  if not h then
    local o = self.o
    h = string.format("%d %d %d %d %d %d %d", n, star and 1 or 0, o.max_retries,
      math.floor(o.result_ttl * 1000), math.floor(o.vt * 1000), math.floor(o.max_result_size),
      o.retry_errors and 1 or 0)
    if self.nheaders < 64 then self.headers[key], self.nheaders = h, self.nheaders + 1 end
  end
  return h
end

-- The XADD command of one task (a chunk of n argument lists or items).
function RedisPool:_task_cmd(job, kk, first, n, fbytes, items, star)
  local a = self._dumps(items, "args")
  local size = #a + #fbytes
  if size > self.o.max_task_size then
    error(new_error("full", string.format(
      "task is %d bytes pickled, over the RedisPool's max_task_size (%d bytes)",
      size, self.o.max_task_size), {size = size, limit = self.o.max_task_size}), 0)
  end
  local seq = self.seq + 1
  self.seq = seq
  local tid = self.tid_prefix .. seq
  self.tasks[tid] = {job = job, k = kk, first = first, n = n}
  self.npending = self.npending + 1
  local h = self:_header(n, star)
  local ring = self.o.ring
  -- round robin over the shards: task n goes to shard (n - 1) % K, which
  -- pool:result(id) finds again from the id. The signature names the
  -- queue, not the shard: an entry may move between shards of its queue.
  local tasks = self.shards[(seq - 1) % #self.shards + 1].k.tasks
  if ring then
    return {"XADD", tasks, "*", "t", tid, "h", h, "f", fbytes, "a", a,
      "s", RA.sign_task(ring, self.o.queue, tid, h, fbytes, a)}, tid
  end
  return {"XADD", tasks, "*", "t", tid, "h", h, "f", fbytes, "a", a}, tid
end

-- Sends the commands; a failure forgets their tasks and raises.
function RedisPool:_send(cmds, tids)
  local ok, r = pcall(self.cl.pipeline, self.cl, cmds)
  if ok then
    for i = 1, #r do
      if core.is_error(r[i]) then ok, r = false, r[i] break end
    end
  end
  if not ok then
    for _, tid in ipairs(tids) do
      if self.tasks[tid] then self.tasks[tid] = nil self.npending = self.npending - 1 end
    end
    error(r, 0)
  end
end

local function check_fn(fn, fname)
  if type(fn) ~= "function" then argerror(1, fname, "function expected, got " .. type(fn)) end
end

local function apply_chunk(job, _, _, _, results, err)
  if err then job:_finish(nil, err) else job:_finish(results[1]) end
end

function RedisPool:apply_async(fn, args, opts)
  check_fn(fn, "apply_async")
  if args ~= nil and type(args) ~= "table" then argerror(2, "apply_async", "args must be a table") end
  local job = self:_new_job("apply_async", opts)
  job._on_chunk = apply_chunk
  local cmd, tid = self:_task_cmd(job, 1, 1, 1, self._dumps(fn, "function"), {args or {}}, true)
  job.id = tid
  self:_send({cmd}, {tid})
  return job
end

function RedisPool:apply(fn, args)
  return self:apply_async(fn, args):get()
end

local function map_chunk(job, _, first, n, results, err)
  if job._ready then return end
  if err then return job:_finish(nil, err) end
  for i = 1, n do job._results[first + i - 1] = results[i] end
  job._left = job._left - 1
  if job._left == 0 then job:_finish(job._results) end
end

local function check_chunksize(cs, fname)
  if type(cs) == "table" then cs = cs.chunksize end
  if cs ~= nil and (type(cs) ~= "number" or cs < 1) then argerror(3, fname, "chunksize must be >= 1") end
  return cs and math.floor(cs) or 1
end

function RedisPool:_map_async(fname, fn, list, chunksize, opts, star)
  check_fn(fn, fname)
  if type(list) ~= "table" then argerror(2, fname, "table expected, got " .. type(list)) end
  chunksize = check_chunksize(chunksize, fname)
  local n = #list
  local job = self:_new_job(fname, opts)
  job._results, job._on_chunk, job._left = result_list(n), map_chunk, 0
  local fbytes = self._dumps(fn, "function")
  local cmds, tids = {}, {}
  for first = 1, n, chunksize do
    local last = math.min(first + chunksize - 1, n)
    local items = {}
    for i = first, last do
      if star and type(list[i]) ~= "table" then
        argerror(2, fname, "item " .. i .. " is not an argument list")
      end
      items[#items + 1] = list[i]
    end
    job._left = job._left + 1
    cmds[#cmds + 1], tids[#tids + 1] = self:_task_cmd(job, job._left, first, last - first + 1,
      fbytes, items, star)
    if #cmds >= 1000 then self:_send(cmds, tids) cmds, tids = {}, {} end
  end
  if #cmds > 0 then self:_send(cmds, tids) end
  job.ids = nil
  if job._left == 0 then job:_finish({}) end
  return job
end


---------------------------------------------------------------- imap

local function imap_chunk(job, kk, _, n, results, err)
  if err then job._errors[kk] = err else job._chunks[kk] = {n = n, results = results} end
  job._narrived = job._narrived + 1
  job._arrived[job._narrived] = kk
end

function RedisPool:_imap(fname, fn, src, chunksize, timeout, ordered)
  check_fn(fn, fname)
  local next_item
  if type(src) == "table" then
    local i, n = 0, #src
    next_item = function() i = i + 1 if i <= n then return true, src[i] end end
  elseif type(src) == "function" then
    next_item = function() local v = src() if v ~= nil then return true, v end end
  else
    argerror(2, fname, "table or iterator function expected, got " .. type(src))
  end
  chunksize = check_chunksize(chunksize, fname)
  local job = self:_new_job(fname)
  job._chunks, job._errors, job._arrived, job._narrived = {}, {}, {}, 0
  job._on_chunk = imap_chunk
  local fbytes = self._dumps(fn, "function")
  local kk, first, exhausted, window = 0, 1, false, 512
  local pool = self
  local function feed()
    local cmds, tids = {}, {}
    while not exhausted and kk - job._narrived < window do
      local items = {}
      for _ = 1, chunksize do
        local okc, ok, v = pcall(next_item)   -- an input that raises ends
        if not okc then                       -- there, after the results
          job._input_error, exhausted, items = ok, true, {}   -- before it
          break
        end
        if not ok then exhausted = true break end
        items[#items + 1] = v
      end
      if #items == 0 then break end
      kk = kk + 1
      cmds[#cmds + 1], tids[#tids + 1] = pool:_task_cmd(job, kk, first, #items, fbytes, items, false)
      first = first + #items
    end
    if #cmds > 0 then pool:_send(cmds, tids) end
  end
  local want, pos, buf, bi = 1, 0, nil, 0
  return function()
    local deadline = timeout and core.time() + timeout
    while true do
      if buf and bi < buf.n then bi = bi + 1 return buf.results[bi] end
      buf = nil
      if job._ready then return nil end
      feed()
      local ck
      if ordered then ck = want else ck = job._arrived[pos + 1] end
      if ck and job._errors[ck] then job._ready = true error(job._errors[ck], 0) end
      if ck and job._chunks[ck] then
        buf, bi = job._chunks[ck], 0
        job._chunks[ck] = nil
        if ordered then want = want + 1 else pos = pos + 1 end
      elseif exhausted and (ordered and want > kk or not ordered and pos >= kk) then
        job._ready = true
        if job._input_error ~= nil then error(job._input_error, 0) end
        return nil
      else
        if pool._state == "done" then job._ready = true error(new_error("closed", "pool was terminated"), 0) end
        local left = deadline and deadline - core.time()
        if left and left <= 0 then
          error(new_error("timeout", string.format("no result within %gs", timeout)), 2)
        end
        pool:_step(left)
      end
    end
  end
end

require("lmp.pool")._add_map_methods(RedisPool)
require("lmp.redis_shards")._add_shard_methods(RedisPool, M)   -- _step_shards

---------------------------------------------------------------- collecting

function RedisPool:_deliver(tid, value)
  local t = self.tasks[tid]
  local job = t and t.job or self.reattached[tid]
  if not job then return false end           -- a duplicate, or not ours
  local okc, ok, v = pcall(decode_result, tid, value, self.o.ring, self.o.queue)
  local err
  if not okc then
    err = new_error("pickle", "cannot unpickle the result of task " .. tid .. ": " .. tostring(ok))
  elseif not ok then
    err = v
  end
  if t then
    self.tasks[tid] = nil
    self.npending = self.npending - 1
    job:_on_chunk(t.k, t.first, t.n, not err and v or nil, err)
  else
    self.reattached[tid] = nil
    if err then job:_finish(nil, err)
    elseif type(v) == "table" and #v == 1 then job:_finish(v[1])   -- apply_async's task
    else job:_finish(v) end
  end
  return true
end

-- Takes finished results; waits up to timeout (nil: up to 1 s, 0: not at
-- all) for the first. Returns the number handled.
function RedisPool:_step(timeout)
  if #self.shards > 1 then return self:_step_shards(timeout) end
  local cl, n = self.cl, 0
  local got = cl:eval("collect", {self.notify, self.results}, {256})
  if #got == 0 and next(self.reattached) then
    local keys, tids = {}, {}
    for tid in pairs(self.reattached) do
      tids[#tids + 1] = tid
      keys[#keys + 1] = self.k.prefix .. "r:" .. M._caller_of(tid)
    end
    local vals = cl:eval("take", keys, tids)
    for i, tid in ipairs(tids) do
      if vals[i] then self:_deliver(tid, vals[i]) n = n + 1 end
    end
    if n > 0 then return n end
    if timeout == nil or timeout > 0.05 then timeout = 0.05 end
  end
  if #got == 0 and (timeout == nil or timeout > 0) then
    local block = math.min(timeout or 1, 1)
    if block < 0.001 then block = 0.001 end
    local r = cl:callt(block + self.o.timeout, "BLPOP", self.notify, string.format("%.3f", block))
    if r then got = cl:eval("collect", {self.notify, self.results}, {256, r[2]}) end
  end
  for i = 1, #got, 2 do
    if self:_deliver(got[i], got[i + 1]) then n = n + 1 end
  end
  return n
end

--- poll([timeout]) handles finished results and runs their callbacks.
function RedisPool:poll(timeout)
  if self._state == "done" then return 0 end
  return self:_step(timeout or 0)
end

--- fileno() -> the fd of the pool's Redis connection (readable when a
-- reply is there; poll(0) takes results).
function RedisPool:fileno() return self.cl.conn:fileno() end

--- result(id) -> an AsyncResult for a task id (job.id of apply_async),
-- from this or an earlier caller (a master that restarted).
function RedisPool:result(tid)
  if type(tid) ~= "string" then argerror(1, "result", "task id string expected") end
  local t = self.tasks[tid]
  if t and t.job.id == tid then return t.job end
  local job = self:_new_job("result")
  job.id = tid
  self.reattached[tid] = job
  return job
end

--- stats() -> {waiting =, pending =, dead =, workers = {{name =, info =}...}}
function RedisPool:stats()
  return M.stats(self.cl, self.o.queue, #self.shards)
end

--- stats(cl, queue [, shards]) -> the totals over the queue's shards
-- (default: the count its callers set), and shards = {{name = tag,
-- length =, pending =, dead =, waiting =}...}. A worker reads every
-- shard and registers in each: it is listed once.
function M.stats(cl, queue, nshards)
  nshards = nshards or M._queue_shards(cl, queue)
  local out = {length = 0, pending = 0, dead = 0, workers = {}, shards = {}}
  local seen = {}
  for _, sh in ipairs(M._shards(queue, nshards)) do
    local k = sh.k
    local r = cl:eval("stats", {k.tasks, k.dead, k.workers, k.winfo}, {GROUP})
    out.length, out.pending, out.dead = out.length + r[1], out.pending + r[2], out.dead + r[3]
    out.shards[#out.shards + 1] = {name = sh.tag, length = r[1], pending = r[2], dead = r[3],
      waiting = math.max(0, r[1] - r[2])}
    for i = 5, #r do
      if not seen[r[i][1]] then
        seen[r[i][1]] = true
        local w = {name = r[i][1], expires_in = (tonumber(r[i][2]) - r[4]) / 1000}
        for kk, v in tostring(r[i][3]):gmatch("(%w+)=(%S+)") do w[kk] = tonumber(v) or v end
        out.workers[#out.workers + 1] = w
      end
    end
  end
  out.waiting = math.max(0, out.length - out.pending)
  return out
end

--- dead_letters([count]) -> list of {id =, task =, deliveries =, error =,
-- kind = "auth" for an entry a worker refused unverified, else nil}.
function RedisPool:dead_letters(count)
  count = count or 100
  local r = {}
  for _, sh in ipairs(self.shards) do     -- shard by shard, count in all
    if #r >= count then break end
    for _, e in ipairs(self.cl:call("XRANGE", sh.k.dead, "-", "+", "COUNT", count - #r)) do
      r[#r + 1] = e
    end
  end
  local out = {}
  for _, e in ipairs(r) do
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    out[#out + 1] = {id = e[1], task = f.t, deliveries = tonumber(f.deliveries), error = f.error,
      kind = f.kind}
  end
  return out
end

function RedisPool:close()
  if self._state == "run" then self._state = "close" end
end

--- join([timeout]) -> true once every task of this pool has its result.
function RedisPool:join(timeout)
  if self._state == "run" then error("join before close: call pool:close() first", 2) end
  local deadline = timeout and core.time() + timeout
  while self.npending > 0 and self._state ~= "done" do
    local left = deadline and deadline - core.time()
    if left and left <= 0 then return false end
    self:_step(left)
  end
  self:_release()
  return true
end

function RedisPool:_release()
  if self._state == "done" then return end
  self._state = "done"
  for tid, t in pairs(self.tasks) do
    t.job:_finish(nil, new_error("closed", "RedisPool was terminated before task " .. tid .. " finished"))
  end
  self.tasks, self.npending = {}, 0
  if self._lanes then self._lanes:close() end
  pcall(self.cl.close, self.cl)
end

--- terminate(): stops waiting; unfinished tasks fail with `closed` here
-- (they stay queued in Redis and workers still run them).
function RedisPool:terminate() self:_release() end

M.AsyncResult = AsyncResult
M._RedisPool = RedisPool
M._decode_result = decode_result

---------------------------------------------------------------- worker side

local function traceback_handler(e)
  local kind = type(e) == "table" and core.is_error(e) and e.kind or nil
  if kind == "interrupted" then return e end
  local tb = debug.traceback("", 2)
  tb = tb:match("^(.-)\n\t%[C%]: in function 'xpcall'") or tb   -- the task's frames only
  return {message = tostring(kind and e.message or e), kind = kind, traceback = tb}
end

-- Functions already loaded in this worker, by their pickled bytes: a map
-- sends one function with every task, and loading bytecode costs more
-- than a tiny task. As in a local Pool's workers, a function is loaded
-- once and its upvalues live on between tasks.
local fn_cache, fn_cached = {}, 0
local FN_CACHE_MAX = 64

local function load_fn(P, fbytes)
  local f = fn_cache[fbytes]
  if f then return f end
  f = P.loads(fbytes)
  if fn_cached >= FN_CACHE_MAX then fn_cache, fn_cached = {}, 0 end
  fn_cache[fbytes], fn_cached = f, fn_cached + 1
  return f
end

--- _run_task(fbytes, abytes, n, star, max_result, who) runs in a pool
-- worker: returns the result value ("O"... or "E"...). An interruption
-- is raised again so that the task counts as not done.
function M._run_task(fbytes, abytes, n, star, max_result, who)
  local P = require "lmp.pickle"
  local results, dumps = {}, P.dumps
  local i = 0
  local ok, err = xpcall(function()
    local f = load_fn(P, fbytes)
    local args = P.loads(abytes)
    for j = 1, n do
      i = j
      if star then
        local a = args[j]
        results[j] = f((table.unpack or unpack)(a, 1, a.n or #a))
      else
        results[j] = f(args[j])
      end
    end
  end, traceback_handler)
  if not ok and type(err) == "table" and err.kind == "interrupted" then error(err, 0) end
  local out
  if ok then
    ok, out = pcall(dumps, results, {name = "result"})
    if ok then out = "O" .. out
      if #out > max_result then
        err = {kind = "full", message = string.format(
          "result is %d bytes pickled, over max_result_size (%d bytes)", #out - 1, max_result)}
        ok = false
      end
    else
      err = {kind = "pickle", message = tostring(type(out) == "table" and out.message or out)}
    end
  end
  if not ok then
    err.index, err.worker = i, who
    out = "E" .. dumps(err)
  end
  return out
end

return M
