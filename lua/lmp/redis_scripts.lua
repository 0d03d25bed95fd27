--- lmp.redis_scripts: the server-side Lua scripts of lmp.RedisPool.
--
-- Each runs atomically in Redis (EVALSHA; loaded again after NOSCRIPT).
-- Keys of one queue share the hash tag {queue}: lmp:{q}:tasks (stream,
-- consumer group "lmp"), lmp:{q}:dead (dead letters), lmp:{q}:err (last
-- error per entry), lmp:{q}:cfg, lmp:{q}:workers (zset: consumer ->
-- expiry ms), lmp:{q}:winfo, lmp:{q}:r:<task id> (results),
-- lmp:{q}:n:<caller> (the caller's list of finished task ids).
--
-- An attempt token is (consumer, delivery count) as the consumer group's
-- pending entries list records it: XAUTOCLAIM (without JUSTID) moves an
-- entry to a new consumer and counts a delivery, so a worker whose task
-- was reclaimed no longer holds the token, and COMMIT / FAIL / HEARTBEAT
-- from it change nothing (the stale result is dropped).
--
-- Result values: "O"..pickled results, "E"..pickled error (the task
-- raised), "D"..deliveries.."\n"..text (dead letter: worker lost),
-- "X"..deliveries.."\n"..pickled error (dead letter: raised every time),
-- "A"..deliveries.."\n"..text (dead letter: a keyed worker refused the
-- entry's signature), "S"..MAC..value (signed: lmp.redis_auth).
local S = {}

-- Shared prelude: token check, entry fields, dead-lettering.
-- A task entry is t (task id "<caller>:<seq>"), h (header "c s m ttl v x
-- e": items, star, max deliveries, result ttl ms, visibility timeout ms,
-- max result bytes, retry errors), f (pickled function), a (pickled
-- items) and, from a RedisPool with an authkey, s (its signature, see
-- lmp.redis_auth: the scripts never check it, workers do). Results of a caller go to the hash r:<caller> (task id ->
-- value) and its task ids to the list n:<caller>; both expire result ttl
-- after the caller's latest result.
local prelude = [==[
local function owns(tasks, g, me, id, d)
  local p = redis.call('XPENDING', tasks, g, id, id, 1)[1]
  return p and p[2] == me and tonumber(p[4]) == tonumber(d)
end
local function fields(f)
  local t = {}
  for i = 1, #f, 2 do t[f[i]] = f[i + 1] end
  local h = t.h or ''           -- (no h: queued by an lmp of one field each)
  t.sig = t.h and t.s or nil    -- with h, s is the signature (not "star")
  local c, s, m, ttl = h:match('^(%d+) (%d) (%d+) (%d+)')
  t.c, t.s = c or t.c or '1', s or t.s or '0'
  t.m, t.ttl = tonumber(m or t.m) or 3, tonumber(ttl or t.ttl) or 3600000
  if h == '' then
    t.h = table.concat({t.c, t.s, t.m, t.ttl, t.v or 30000, t.x or 4194304, t.e or 0}, ' ')
  end
  return t
end
local function caller(tid)
  return tid:match('^(.*):[^:]*$') or tid
end
local function finish(prefix, t, value)
  if type(t.t) ~= 'string' then return end   -- no task id: no caller to tell
  local cid = caller(t.t)
  local rk, nk = prefix .. 'r:' .. cid, prefix .. 'n:' .. cid
  redis.call('HSET', rk, t.t, value)
  redis.call('PEXPIRE', rk, t.ttl)
  redis.call('RPUSH', nk, t.t)
  redis.call('PEXPIRE', nk, t.ttl)
end
local function retire(tasks, errs, g, id)
  redis.call('XACK', tasks, g, id)
  redis.call('XDEL', tasks, id)
  redis.call('HDEL', errs, id, id .. ':p', id .. ':k')
end
local function deadletter(tasks, dead, errs, prefix, g, id, t, deliveries)
  local text = redis.call('HGET', errs, id) or
    'the worker holding it stopped without a result'
  local perr = redis.call('HGET', errs, id .. ':p')
  local kind = redis.call('HGET', errs, id .. ':k') or ''
  redis.call('XADD', dead, 'MAXLEN', '~', 100000, '*', 't', t.t or '', 'id', id,
    'deliveries', deliveries, 'error', text, 'kind', kind,
    'h', t.h or '', 'f', t.f or '', 'a', t.a or '', 's', t.sig or '')
  if kind == 'auth' then
    finish(prefix, t, 'A' .. deliveries .. '\n' .. text)
  elseif perr then
    finish(prefix, t, 'X' .. deliveries .. '\n' .. perr)
  else
    finish(prefix, t, 'D' .. deliveries .. '\n' .. text)
  end
  retire(tasks, errs, g, id)
end
]==]

--- FETCH: KEYS tasks, dead, err; ARGV group, consumer, min_idle_ms,
-- count, cursor, read_new (0/1), prefix.
-- Reclaims entries idle for min_idle_ms (counting the delivery), dead-
-- letters those past their max deliveries, then reads new entries.
-- Returns {next_cursor, {id, deliveries, field list}...}.
S.fetch = prelude .. [==[
local tasks, dead, errs = KEYS[1], KEYS[2], KEYS[3]
local g, me, idle, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local prefix = ARGV[7]
local out = {'0-0'}
local r = redis.call('XAUTOCLAIM', tasks, g, me, idle, ARGV[5], 'COUNT', count)
out[1] = r[1]
for _, e in ipairs(r[2]) do
  if e and e[2] then
    local id = e[1]
    local t = fields(e[2])
    local p = redis.call('XPENDING', tasks, g, id, id, 1)[1]
    local d = tonumber(p[4])
    if d > t.m then
      deadletter(tasks, dead, errs, prefix, g, id, t, d - 1)
    else
      out[#out + 1] = {id, d, e[2]}
    end
  end
end
if ARGV[6] == '1' and #out - 1 < count then
  local rr = redis.call('XREADGROUP', 'GROUP', g, me, 'COUNT', count - #out + 1,
    'STREAMS', tasks, '>')
  if rr then
    for _, e in ipairs(rr[1][2]) do out[#out + 1] = {e[1], 1, e[2]} end
  end
end
return out
]==]

--- COMMIT: KEYS tasks, err; ARGV group, consumer, prefix, lowest id,
-- highest id, then per caller: caller id, ttl ms, count k, and k times
-- id, deliveries, task id, value.
-- Checks every token with one XPENDING over [lowest, highest], then
-- stores the owned results and retires their entries with one variadic
-- command each: in a script a redis.call costs more than the work of a
-- task, and the worker, not Redis, sorts and groups the batch.
-- Returns one 1 (committed) or 0 (stale: discarded) per result, in order.
S.commit = [==[
local tasks, errs = KEYS[1], KEYS[2]
local g, me, prefix = ARGV[1], ARGV[2], ARGV[3]
local held = {}
for _, p in ipairs(redis.call('XPENDING', tasks, g, ARGV[4], ARGV[5], 1000000, me)) do
  held[p[1]] = tonumber(p[4])
end
local function each(cmd, key, list)
  for j = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, j, math.min(j + 999, #list)))
  end
end
local out, ids, again = {}, {}, {}
local i = 6
while i <= #ARGV do
  local cid, ttl, k = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local hv, tids = {}, {}
  for j = i, i + 4 * k - 1, 4 do
    local id, d, tid = ARGV[j], tonumber(ARGV[j + 1]), ARGV[j + 2]
    if held[id] == d then
      held[id] = nil                  -- a result given twice commits once
      ids[#ids + 1] = id
      if d > 1 then again[#again + 1] = id again[#again + 1] = id .. ':p' end
      hv[#hv + 1] = tid
      hv[#hv + 1] = ARGV[j + 3]
      tids[#tids + 1] = tid
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  i = i + 4 * k
  if #tids > 0 then
    local rk, nk = prefix .. 'r:' .. cid, prefix .. 'n:' .. cid
    each('HSET', rk, hv)
    redis.call('PEXPIRE', rk, ttl)
    each('RPUSH', nk, tids)
    redis.call('PEXPIRE', nk, ttl)
  end
end
if #ids > 0 then
  for j = 1, #ids, 1000 do
    redis.call('XACK', tasks, g, unpack(ids, j, math.min(j + 999, #ids)))
  end
  each('XDEL', tasks, ids)
  if #again > 0 then each('HDEL', errs, again) end
end
return out
]==]

--- FAIL: KEYS tasks, dead, err; ARGV group, consumer, prefix, id,
-- deliveries, error text, pickled error ('' if none), final (0/1)
-- [, kind: 'auth' for an entry refused unverified: final, its caller
-- gets an "A" value].
-- Records the error; dead-letters the entry when it has had its
-- deliveries (or final), else makes it at once reclaimable.
-- Returns 'dead', 'retry' or 'stale'.
S.fail = prelude .. [==[
local tasks, dead, errs = KEYS[1], KEYS[2], KEYS[3]
local g, me, prefix, id, d = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not owns(tasks, g, me, id, d) then return 'stale' end
redis.call('HSET', errs, id, ARGV[6])
if ARGV[7] ~= '' then redis.call('HSET', errs, id .. ':p', ARGV[7])
else redis.call('HDEL', errs, id .. ':p') end
if ARGV[9] and ARGV[9] ~= '' then redis.call('HSET', errs, id .. ':k', ARGV[9]) end
local e = redis.call('XRANGE', tasks, id, id)[1]
if not e then return 'stale' end
local t = fields(e[2])
if ARGV[8] == '1' or tonumber(d) >= t.m then
  deadletter(tasks, dead, errs, prefix, g, id, t, d)
  return 'dead'
end
redis.call('XCLAIM', tasks, g, me, 0, id, 'IDLE', 1000000000, 'JUSTID')
return 'retry'
]==]

--- HEARTBEAT: KEYS tasks, workers, winfo; ARGV group, consumer,
-- expire_ms, info, then id, deliveries pairs. Registers the worker as
-- live and resets the idle time of the entries it still owns (XCLAIM
-- JUSTID does not count a delivery). Returns 1/0 per entry (0: lost).
S.heartbeat = prelude .. [==[
local tasks, workers, winfo = KEYS[1], KEYS[2], KEYS[3]
local g, me = ARGV[1], ARGV[2]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
if ARGV[3] ~= '0' then
  redis.call('ZADD', workers, now + tonumber(ARGV[3]), me)
  redis.call('HSET', winfo, me, ARGV[4])
else
  redis.call('ZREM', workers, me)
  redis.call('HDEL', winfo, me)
end
local out = {}
for i = 5, #ARGV, 2 do
  if owns(tasks, g, me, ARGV[i], ARGV[i + 1]) then
    redis.call('XCLAIM', tasks, g, me, 0, ARGV[i], 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
local infos = redis.call('HKEYS', winfo)
for _, w in ipairs(infos) do
  if not redis.call('ZSCORE', workers, w) then redis.call('HDEL', winfo, w) end
end
return out
]==]

--- COLLECT: KEYS notify, results; ARGV count, extra task ids...
-- Pops up to count finished task ids (plus the extra ones) and takes
-- their results. Returns {tid, value or false, ...}.
S.collect = [==[
local notify, results, count = KEYS[1], KEYS[2], tonumber(ARGV[1])
local ids = redis.call('LPOP', notify, count) or {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return {} end
local vals = redis.call('HMGET', results, unpack(ids))
redis.call('HDEL', results, unpack(ids))
local out = {}
for i, tid in ipairs(ids) do
  out[#out + 1] = tid
  out[#out + 1] = vals[i]
end
return out
]==]

--- TAKE: KEYS the result hash of each task; ARGV task ids.
-- Takes the results of tasks by id (a caller that reattached), each
-- at most once. Returns one value or false per task.
S.take = [==[
local out = {}
for i, tid in ipairs(ARGV) do
  out[i] = redis.call('HGET', KEYS[i], tid)
  if out[i] then redis.call('HDEL', KEYS[i], tid) end
end
return out
]==]

--- STATS: KEYS tasks, dead, workers, winfo; ARGV group.
-- Returns {length, pending, dead, now_ms, {consumer, expiry, info}...}.
S.stats = [==[
local tasks, dead, workers, winfo = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local len = redis.call('EXISTS', tasks) == 1 and redis.call('XLEN', tasks) or 0
local pending = 0
if len > 0 or redis.call('EXISTS', tasks) == 1 then
  local ok, p = pcall(redis.call, 'XPENDING', tasks, ARGV[1])
  if ok and type(p) == 'table' then pending = tonumber(p[1]) or 0 end
end
local out = {len, pending, redis.call('XLEN', dead), now}
local ws = redis.call('ZRANGEBYSCORE', workers, now, '+inf', 'WITHSCORES')
for i = 1, #ws, 2 do
  out[#out + 1] = {ws[i], ws[i + 1], redis.call('HGET', winfo, ws[i]) or ''}
end
return out
]==]

return S
