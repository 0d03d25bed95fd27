--- lmp.redis_auth: signed tasks and results for RedisPool and `lmp worker`
-- (docs/api/redis.md, "Security").
--
-- An authkey K (32 bytes or more) never signs anything itself: two keys
-- are derived from it, one for tasks and one for results, so that a
-- result can never pass as a task. A MAC is HMAC-SHA256 (libsodium,
-- lmp.c.auth) over length-framed parts, always led by the queue name,
-- so an entry signed for one queue is refused on another.
--
--   task entry:  s = MAC(task key;   queue, task id, header, function, args)
--   result:      "S" MAC(result key; queue, task id, value) value
--   error kept for a dead letter: MAC(result key; queue, task id, "X", err) err
--
-- A key ring is {sign = key, keys = {key...}}: `sign` signs (the first
-- authkey given), every one of `keys` is accepted (rotation). A worker
-- signs a result with the key that verified its task, so a caller still
-- on the old key of a rotation gets results it can check.
local A = require "lmp.c.auth"
local R = require "lmp.c.redis"
local core = require "lmp.core"

local M = {}
local KEY_MIN = 32
local MAC = A.MAC_SIZE
M.KEY_MIN = KEY_MIN

-- The two keys of an authkey, each with its HMAC state made once.
local function derive(k)
  return {task = A.key(A.mac(k, "lmp-redis-task-v1")),
          result = A.key(A.mac(k, "lmp-redis-result-v1"))}
end

--- read_key_file(path) -> the key in it: the file's bytes, less one
-- trailing newline (as `openssl rand -base64 48 > key` writes it).
function M.read_key_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot read the authkey file: " .. tostring(err), 0) end
  local s = f:read("*a") or ""
  f:close()
  return (s:gsub("\r?\n$", ""))
end

local function check_key(k, what)
  if type(k) ~= "string" then error(what .. " must be a string", 0) end
  if #k < KEY_MIN then
    error(string.format("%s is %d bytes: an authkey must be at least %d bytes "
      .. "(e.g. openssl rand -base64 48)", what, #k, KEY_MIN), 0)
  end
  return k
end

local function list_of(v)
  if type(v) == "table" then return v end
  return {v}
end

--- keyring(authkey, authkey_file) -> a key ring, or nil for no key.
-- authkey: a string or a list {new, old...}; authkey_file: a path or a
-- list of paths. With neither, LMP_AUTHKEY_FILE (paths separated by
-- ':') is read, if set. Raises a plain message for a bad key.
function M.keyring(authkey, authkey_file)
  local raw = {}
  if authkey ~= nil then
    for i, k in ipairs(list_of(authkey)) do raw[#raw + 1] = check_key(k, "authkey #" .. i) end
    if #raw == 0 then error("authkey must be a string or a non-empty list of strings", 0) end
  end
  if authkey_file ~= nil then
    for _, p in ipairs(list_of(authkey_file)) do
      if type(p) ~= "string" then error("authkey_file must be a path or a list of paths", 0) end
      raw[#raw + 1] = check_key(M.read_key_file(p), "the key in " .. p)
    end
  end
  if authkey == nil and authkey_file == nil then
    local env = os.getenv("LMP_AUTHKEY_FILE")
    if env and env ~= "" then
      for p in env:gmatch("[^:]+") do
        raw[#raw + 1] = check_key(M.read_key_file(p), "the key in " .. p .. " (LMP_AUTHKEY_FILE)")
      end
    end
  end
  if #raw == 0 then return nil end
  local ring = {keys = {}}
  for i, k in ipairs(raw) do ring.keys[i] = derive(k) end
  ring.sign = ring.keys[1]
  return ring
end

---------------------------------------------------------------- policy

--- is_local(parsed) -> true for a Unix socket or a loopback host
-- (127.0.0.0/8, ::1, localhost): parsed is R.parse_url's table. A name
-- that merely starts with "127." is not loopback.
function M.is_local(u)
  if u.path and u.path ~= "" then return true end
  local h = (u.host or ""):lower():gsub("^%[(.*)%]$", "%1")
  return require("lmp.c.connection").is_loopback(h)
end

local warned = {}

--- check_policy(url, ring, insecure, who): a Redis that is not local
-- needs a key, unless insecure (then a warning, once per url). Runs
-- before any connection. Raises an "auth" error naming the fix.
function M.check_policy(url, ring, insecure, who)
  local u = R.parse_url(url)
  if ring or M.is_local(u) then return end
  local host = tostring(u.host)
  if not insecure then
    error(core.error("auth", string.format(
      "%s: Redis at %s is not on loopback and no authkey is set: anyone who can "
      .. "write to it could run code on every worker. Give an authkey (authkey = <32+ "
      .. "bytes>, authkey_file = PATH, --authkey-file FILE or LMP_AUTHKEY_FILE), or "
      .. "accept the risk with insecure = true (--insecure)", who, host)), 0)
  end
  if not warned[url] then
    warned[url] = true
    local msg = string.format("%s: running without an authkey on Redis at %s (insecure): "
      .. "whoever can write to it can run code on every worker", who, host)
    local ok, log = pcall(require, "lmp.log")
    if ok and log.warning then log.warning("%s", msg)
    else io.stderr:write(msg, "\n") end
  end
end

---------------------------------------------------------------- tasks

--- sign_task(ring, queue, tid, h, f, a) -> the entry's s field.
function M.sign_task(ring, queue, tid, h, f, a)
  return A.mac(ring.sign.task, queue, tid, h, f, a)
end

--- check_task(ring, queue, tid, h, f, a, s) -> the key set that signed
-- it, or nil (no signature, or none of ours).
function M.check_task(ring, queue, tid, h, f, a, s)
  if type(s) ~= "string" or #s ~= MAC or type(tid) ~= "string" or type(h) ~= "string"
      or type(f) ~= "string" or type(a) ~= "string" then
    return nil
  end
  for _, k in ipairs(ring.keys) do
    if A.verify(k.task, s, queue, tid, h, f, a) then return k end
  end
  return nil
end

---------------------------------------------------------------- results

--- sign_result(key, queue, tid, v) -> "S" .. MAC .. v
function M.sign_result(key, queue, tid, v)
  return "S" .. A.mac(key.result, queue, tid, v) .. v
end

--- sign_error(key, queue, tid, perr) -> MAC .. perr (kept for a dead letter)
function M.sign_error(key, queue, tid, perr)
  return A.mac(key.result, queue, tid, "X", perr) .. perr
end

local function verified(ring, mac, ...)
  for _, k in ipairs(ring.keys) do
    if A.verify(k.result, mac, ...) then return true end
  end
  return false
end

--- open_result(ring, queue, tid, s) -> the value inside a signed result,
-- or nil when its MAC does not match any key.
function M.open_result(ring, queue, tid, s)
  if #s < 1 + MAC then return nil end
  local v = s:sub(2 + MAC)
  if verified(ring, s:sub(2, 1 + MAC), queue, tid, v) then return v end
  return nil
end

--- open_error(ring, queue, tid, s) -> the pickled error inside, or nil.
function M.open_error(ring, queue, tid, s)
  if #s < MAC then return nil end
  local perr = s:sub(1 + MAC)
  if verified(ring, s:sub(1, MAC), queue, tid, "X", perr) then return perr end
  return nil
end

return M
