--- lmp.pickle: the one codec every value crossing a process or thread
-- boundary goes through. See docs/api/pickle.md for the rules.
--
--   local pickle = require "lmp.pickle"
--   local s = pickle.dumps(v [, {format = "json" | "binary", name = "args"}])
--   local v = pickle.loads(s [, {functions = false}])
--   pickle.register("Point", Point)      -- a class travels by name
--
-- JSON form. Plain data (no metatables, no shared tables, numbers that
-- survive cjson's 14 digits, valid UTF-8, tables that are sequences or
-- string-keyed maps) is written as cjson would write it, so any JSON
-- reader sees the obvious value. Data that is plain but for some numbers
-- or strings (integral floats, 17-digit floats, big integers, byte
-- strings) stays plain JSON too, with just those leaves written as the
-- tagged strings below. C.jsontext writes such data in one pass and
-- C.jsonload reads it back (lpickle_json.c: cjson's very text, without
-- cjson); text it does not know goes through cjson, then C.fix puts the
-- leaves back in place. Anything else is written as
--   ["\1lmp1", <tagged value>]
-- where scalars cjson would lose become strings starting with the control
-- byte \1 ("\1i<int>", "\1f<float>" or "\1x<its 64 bits in hex>",
-- "\1b<base64>", "\1'<string that
-- starts with \1>", "\1r<id>" a reference, "\1g" the globals, "\1m<module>",
-- "\1n<class>", "\1j<fid>:<n>" a shared upvalue) and containers other than
-- plain sequences become arrays headed by a tag:
--   ["\1t", mt, k1, v1, k2, v2, ...]     any table (ordered pairs)
--   ["\1F", bytecode, env, up1, up2, ...] a Lua function
--   ["\1C", module, field]                a C function by name
--   ["\1u", class, state]                 userdata with __pickle
-- Tables and functions are numbered in the order they are written (a
-- depth-first walk), which is the order the reader meets them, so "\1r<id>"
-- always refers back to something already built: shared references and
-- cycles keep their shape.
local core = require "lmp.core"       -- registers the lmp.c.* preloads
local C = require "lmp.c.pickle"
local cjson = require("cjson").new()   -- private: user settings stay theirs

local MAX_DEPTH = 1000
cjson.encode_max_depth(MAX_DEPTH + 10)
cjson.decode_max_depth(MAX_DEPTH + 10)
cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false)
cjson.encode_number_precision(14)

local type, next, pairs, tostring, tonumber = type, next, pairs, tostring, tonumber
local rawget, rawset, pcall, error, select = rawget, rawset, pcall, error, select
local byte, sub, format, find = string.byte, string.sub, string.format, string.find
local floor = math.floor
local tointeger, mtype = math.tointeger, math.type
local getmetatable, setmetatable = debug.getmetatable, setmetatable
local getupvalue, setupvalue = debug.getupvalue, debug.setupvalue
local upvalueid, upvaluejoin = debug.upvalueid, debug.upvaluejoin
local getinfo = debug.getinfo
local setfenv = rawget(_G, "setfenv")
local load = (_VERSION == "Lua 5.1" and not rawget(_G, "jit")) and
  function(s, name) return loadstring(s, name) end or load
local rawlen = rawget(_G, "rawlen") or function(t) return #t end
local cencode, cdecode, null = cjson.encode, cjson.decode, cjson.null
local plain, fix, b64enc, b64dec = C.plain, C.fix, C.b64enc, C.b64dec
local jsontext = C.jsontext
local fmtfloat, parsefloat, utf8ok = C.fmtfloat, C.parsefloat, C.utf8ok
local bdumps, bloads, bloads_into = C.bdumps, C.bloads, C.bloads_into
local tagcopy, untag = C.tagcopy, C.untag
local jsonlist, jsonload, joinbytes = C.jsonlist, C.jsonload, C.joinbytes
local globals = C.globals()

local TAG = C.TAG
local HEADER = TAG .. "lmp1"
local T_TABLE, T_FUNC, T_CFUNC, T_UDATA = TAG .. "t", TAG .. "F", TAG .. "C", TAG .. "u"
local BINARY_MAGIC = 0xB1    -- first byte of the binary form (lpickle_bin.c)

local M = {}
-- name -> metatable (pickle.register). lmp's own classes that live in
-- modules a receiver may not have loaded yet are loaded on first sight
-- (a fixed list: a name in the data never picks what gets required).
local LAZY = {["lmp.Proxy"] = "lmp.manager", ["lmp.ValueProxy"] = "lmp.manager",
              ["lmp.NamespaceProxy"] = "lmp.manager"}
local classes = setmetatable({}, {__index = function(t, name)
  local mod = LAZY[name]
  if mod and not package.loaded[mod] then
    require(mod)
    return rawget(t, name)
  end
end})
local class_names = {}   -- metatable -> name

local function raise(msg)
  error(core.error("pickle", msg), 0)
end

-- ---------------------------------------------------------------- paths

local function path_string(st)
  local p, n = st.path, st.plen
  if n > 24 then
    return table.concat(p, "", 1, 10) .. "..." .. table.concat(p, "", n - 10, n)
  end
  return table.concat(p, "", 1, n)
end

local function fail(st, msg)
  raise(path_string(st) .. ": " .. msg)
end

local function key_segment(k)
  local tk = type(k)
  if tk == "string" then
    if find(k, "^[%a_][%w_]*$") then return "." .. k end
    return format("[%q]", k)
  elseif tk == "number" then
    return "[" .. tostring(k) .. "]"
  elseif tk == "boolean" then
    return "[" .. tostring(k) .. "]"
  end
  return "[<" .. tk .. ">]"
end

local function push(st, seg)
  local n = st.plen + 1
  st.plen = n
  st.path[n] = seg
end

-- ---------------------------------------------------------------- names

-- value -> module name, for every table or function in package.loaded.
local function module_names()
  local rev = {}
  for name, v in next, package.loaded do
    local tv = type(v)
    if (tv == "table" or tv == "function") and type(name) == "string"
        and name ~= "" and rev[v] == nil then
      rev[v] = name
    end
  end
  return rev
end

-- C function -> {module, field}, for the functions of loaded modules.
local cfunc_cache = setmetatable({}, {__mode = "k"})

local function cfunc_name(f)
  local ref = cfunc_cache[f]
  if ref then
    local m = package.loaded[ref[1]]
    if type(m) == "table" and rawget(m, ref[2]) == f then return ref end
  end
  for mod, t in next, package.loaded do
    if type(t) == "table" and type(mod) == "string" then
      for k, v in next, t do
        if type(v) == "function" and type(k) == "string" and cfunc_cache[v] == nil then
          cfunc_cache[v] = {mod, k}
        end
      end
    end
  end
  ref = cfunc_cache[f]
  if ref then
    local m = package.loaded[ref[1]]
    if type(m) == "table" and rawget(m, ref[2]) == f then return ref end
  end
  return nil
end

-- ---------------------------------------------------------------- encode

local encode_value

local function encode_number(x)
  if plain(x) then return x end
  if mtype and mtype(x) == "integer" then return TAG .. "i" .. format("%d", x) end
  return TAG .. "f" .. fmtfloat(x)
end

local function encode_string(s)
  if plain(s) then return s end
  if byte(s, 1) == 1 and utf8ok(s) then return TAG .. "'" .. s end
  return TAG .. "b" .. b64enc(s)
end

local function new_id(st, v)
  local n = st.n + 1
  st.n = n
  st.ids[v] = n
  return n
end

local function is_sequence(t)
  local n, count = rawlen(t), 0
  for k in next, t do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then return nil end
    count = count + 1
  end
  if count == n then return n end
  return nil
end

local function encode_table(t, st, depth)
  new_id(st, t)
  local mt = getmetatable(t)
  local n = mt == nil and is_sequence(t)
  local out, plen = {}, st.plen
  if n then
    for i = 1, n do
      st.plen = plen
      push(st, "[" .. i .. "]")
      out[i] = encode_value(rawget(t, i), st, depth + 1)
    end
  else
    out[1] = T_TABLE
    if mt ~= nil then
      push(st, "<metatable>")
      out[2] = encode_value(mt, st, depth + 1)
    else
      out[2] = null
    end
    local i = 3
    for k, v in next, t do
      st.plen = plen
      push(st, "<key " .. tostring(k) .. ">")
      out[i] = encode_value(k, st, depth + 1)
      st.plen = plen
      push(st, key_segment(k))
      out[i + 1] = encode_value(v, st, depth + 1)
      i = i + 2
    end
  end
  st.plen = plen
  return out
end

local function encode_function(f, st, depth)
  if getinfo(f, "S").what == "C" then
    local ref = cfunc_name(f)
    if not ref then fail(st, "cannot pickle a C function that is not a field of a loaded module") end
    new_id(st, f)
    return {T_CFUNC, ref[1], ref[2]}
  end
  local fid = new_id(st, f)
  local ok, code = pcall(string.dump, f)
  if not ok then fail(st, "cannot pickle function: " .. tostring(code)) end
  local out, plen = {T_FUNC, b64enc(code), null}, st.plen
  -- A 5.1 function environment is never copied: like _ENV equal to the
  -- globals on 5.2+, it binds to the receiver's globals (copying it would
  -- drag the sender's global state, or a sandbox, along).
  local i = 1
  while true do
    local name, v = getupvalue(f, i)
    if name == nil then break end
    local uid = upvalueid and upvalueid(f, i)
    local joined = uid and st.upvals[uid]
    if joined then
      out[i + 3] = joined
    elseif name == "_ENV" and type(v) == "table" then
      out[i + 3] = TAG .. "g"    -- the global environment binds to the receiver's
    else
      if uid then st.upvals[uid] = TAG .. "j" .. fid .. ":" .. i end
      push(st, "<upvalue " .. (name ~= "" and name or tostring(i)) .. ">")
      out[i + 3] = encode_value(v, st, depth + 1)
      st.plen = plen
    end
    i = i + 1
  end
  return out
end

local function encode_userdata(u, st, depth)
  local mt = getmetatable(u)
  local hook = type(mt) == "table" and rawget(mt, "__pickle")
  if not hook then fail(st, "cannot pickle userdata") end
  local name = class_names[mt]
  if name == nil and type(rawget(mt, "__name")) == "string" then name = rawget(mt, "__name") end
  if name == nil then
    fail(st, "cannot pickle userdata: its metatable is not registered (lmp.pickle.register)")
  end
  new_id(st, u)
  local ok, state = pcall(hook, u)
  if not ok then fail(st, "__pickle failed: " .. tostring(state)) end
  local plen = st.plen
  push(st, "<state>")
  local out = {T_UDATA, name, encode_value(state, st, depth + 1)}
  st.plen = plen
  return out
end

function encode_value(v, st, depth)
  local tv = type(v)
  if tv == "string" then return encode_string(v)
  elseif tv == "number" then return encode_number(v)
  elseif tv == "boolean" then return v
  elseif tv == "nil" then return null
  end
  local id = st.ids[v]
  if id then return TAG .. "r" .. id end
  if v == globals then return TAG .. "g" end
  local name = class_names[v]
  if name then return TAG .. "n" .. name end
  st.modules = st.modules or module_names()
  name = st.modules[v]
  if name then return TAG .. "m" .. name end
  if depth >= MAX_DEPTH then fail(st, "nesting deeper than " .. MAX_DEPTH .. " levels") end
  if tv == "table" then return encode_table(v, st, depth)
  elseif tv == "function" then return encode_function(v, st, depth)
  elseif tv == "userdata" then return encode_userdata(v, st, depth)
  end
  fail(st, "cannot pickle " .. tv)
end

local function dumps_json(v, name)
  local text = jsontext(v, classes)   -- C: plain data, cjson's very text
  if text then return text end
  local copy = tagcopy(v, classes)   -- C, for data-only values
  if copy ~= nil then return cencode({HEADER, copy}) end
  local st = {ids = {}, n = 0, upvals = {}, path = {name or "value"}, plen = 1}
  local ok, s = pcall(cencode, {HEADER, encode_value(v, st, 0)})
  if not ok then raise((name or "value") .. ": " .. tostring(s)) end
  return s
end

-- ---------------------------------------------------------------- decode

local decode_value

local function bad(what)
  raise("malformed input: " .. what)
end

local function decode_tagged_string(s, st)
  local tag, rest = sub(s, 2, 2), sub(s, 3)
  if tag == "'" then return rest
  elseif tag == "b" then return b64dec(rest) or bad("bad base64 string")
  elseif tag == "i" then
    if not find(rest, "^%-?%d+$") then bad("bad integer") end
    return tonumber(rest)
  elseif tag == "f" or tag == "x" then
    local x = tag == "f" and parsefloat(rest) or C.leaf(s)
    if x == nil then bad("bad float") end
    return x
  elseif tag == "r" then
    local v = st.objs[tonumber(rest) or 0]
    if not v then bad("reference to an unknown or unfinished object") end
    return v
  elseif tag == "g" then return globals
  elseif tag == "n" then
    return classes[rest] or raise("unknown class '" .. rest .. "' (lmp.pickle.register it)")
  elseif tag == "m" then
    local m = package.loaded[rest]
    if m ~= nil then return m end
    if st.nofunc then raise("module '" .. rest .. "' is not loaded (functions refused)") end
    local ok, mod = pcall(require, rest)
    if not ok then raise("cannot load module '" .. rest .. "': " .. tostring(mod)) end
    return mod
  end
  bad("unknown tag")
end

local function new_obj(st, v)
  local n = st.n + 1
  st.n = n
  st.objs[n] = v
  return n
end

local function decode_function(x, st, depth)
  if st.nofunc then raise("functions refused (loads with functions = false)") end
  local code = type(x[2]) == "string" and b64dec(x[2]) or bad("bad function")
  if byte(code, 1) ~= 27 then bad("function is not bytecode") end
  local f, err = load(code, "=pickled", "b")
  if not f then bad("cannot load function: " .. tostring(err)) end
  local fid = new_obj(st, f)
  if x[3] ~= null then
    local env = decode_value(x[3], st, depth + 1)
    if setfenv and type(env) == "table" then setfenv(f, env) end
  end
  for i = 4, #x do
    local u, idx = x[i], i - 3
    if getupvalue(f, idx) == nil then bad("too many upvalues") end
    if type(u) == "string" and sub(u, 1, 2) == TAG .. "j" then
      local ofid, oidx = sub(u, 3):match("^(%d+):(%d+)$")
      local other = st.objs[tonumber(ofid) or 0]
      oidx = tonumber(oidx)
      if not upvaluejoin or type(other) ~= "function" or other == f and oidx == idx
          or getupvalue(other, oidx or 0) == nil then
        bad("bad shared upvalue")
      end
      upvaluejoin(f, idx, other, oidx)
    else
      setupvalue(f, idx, decode_value(u, st, depth + 1))
    end
  end
  return f
end

local function decode_table(x, st, depth)
  local head = x[1]
  if head == T_TABLE then
    local t = {}
    new_obj(st, t)
    local mt = decode_value(x[2], st, depth + 1)
    local n = #x
    if n % 2 ~= 0 then bad("odd table") end
    for i = 3, n, 2 do
      local k = decode_value(x[i], st, depth + 1)
      if k == nil or k ~= k then bad("nil or NaN key") end
      rawset(t, k, decode_value(x[i + 1], st, depth + 1))
    end
    if mt ~= nil then
      if type(mt) ~= "table" then bad("metatable is not a table") end
      setmetatable(t, mt)
    end
    return t
  elseif head == T_FUNC then
    return decode_function(x, st, depth)
  elseif head == T_CFUNC then
    if st.nofunc then raise("functions refused (loads with functions = false)") end
    local m = package.loaded[x[2]]
    local f = type(m) == "table" and rawget(m, x[3])
    if type(f) ~= "function" then
      raise("unknown C function " .. tostring(x[2]) .. "." .. tostring(x[3]))
    end
    new_obj(st, f)
    return f
  elseif head == T_UDATA then
    local name = x[2]
    local id = new_obj(st, false)
    local state = decode_value(x[3], st, depth + 1)
    local mt = classes[name]
    if mt == nil and type(name) == "string" then
      mt = debug.getregistry()[name]
    end
    local hook = type(mt) == "table" and rawget(mt, "__unpickle")
    if not hook then raise("no __unpickle for userdata class '" .. tostring(name) .. "'") end
    local ok, u = pcall(hook, state)
    if not ok then raise("__unpickle of '" .. tostring(name) .. "' failed: " .. tostring(u)) end
    st.objs[id] = u
    return u
  end
  local t = {}
  new_obj(st, t)
  for i = 1, #x do t[i] = decode_value(x[i], st, depth + 1) end
  return t
end

function decode_value(x, st, depth)
  local tx = type(x)
  if tx == "string" then
    if byte(x, 1) ~= 1 then return x end
    return decode_tagged_string(x, st)
  elseif tx == "number" then
    if tointeger and x == floor(x) then return tointeger(x) or x end
    return x
  elseif tx == "table" then
    if depth > MAX_DEPTH + 5 then bad("nesting too deep") end
    return decode_table(x, st, depth)
  elseif x == null then
    return nil
  end
  return x
end

local function loads_json(s, nofunc)
  local ok, x = pcall(cdecode, s)
  if not ok then raise("malformed input: " .. tostring(x)) end
  if type(x) == "table" and x[1] == HEADER then
    local v, done = untag(x[2])         -- C, for data-only values
    if done then return v end
    local st = {objs = {}, n = 0, nofunc = nofunc}
    return decode_value(x[2], st, 0)
  end
  -- cjson writes the tag byte as \u0001: no such text, no tagged leaf
  return fix(x, find(s, "null", 1, true) ~= nil, find(s, "\\u0001", 1, true) ~= nil)
end

-- ---------------------------------------------------------------- API

local function check_opts(opts, fname)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to '" .. fname .. "' (table expected, got " .. type(opts) .. ")", 3)
  end
  return opts
end

local DUMPS_OPTS = {format = true, codec = true, name = true}

-- The format dumps' options ask for: format, or codec as pools, pipes and
-- queues spell it (an unknown key is refused: {codec = "binary"} once gave
-- JSON without a word).
local function dumps_format(opts)
  for k in pairs(opts) do
    if not DUMPS_OPTS[k] then
      error("bad argument #2 to 'dumps' (unknown option '" .. tostring(k) ..
        "': format (or codec), name)", 3)
    end
  end
  local fmt, codec = opts.format, opts.codec
  if fmt ~= nil and codec ~= nil and fmt ~= codec then
    error("bad argument #2 to 'dumps' (format and codec disagree)", 3)
  end
  fmt = fmt or codec
  if fmt ~= nil and fmt ~= "json" and fmt ~= "binary" then
    error("bad argument #2 to 'dumps' (format must be \"json\" or \"binary\")", 3)
  end
  return fmt
end

--- dumps(v [, opts]) -> string. opts.format (or opts.codec): "json"
-- (default) or "binary"; opts.name: the root's name in error paths ("value").
function M.dumps(v, opts)
  check_opts(opts, "dumps")
  if opts then
    if dumps_format(opts) == "binary" then return bdumps(v, opts.name, classes) end
    return dumps_json(v, opts.name)
  end
  return dumps_json(v)
end

-- A pool's payload: a string, or an lmp.Bytes (a big one, which the
-- binary decoders read in place; JSON needs it as a string).
local function first_byte(p)
  if type(p) == "string" then return byte(p, 1) end
  return p:byte1()
end
local function as_string(p)
  if type(p) == "string" then return p end
  return p:tostring()
end
local function part(p, i, j)
  if type(p) == "string" then return sub(p, i, j) end
  return p:sub(i, j)
end

-- ---------------------------------------------------------------- pool lists
-- A pool's JSON list (a chunk of arguments or of results) carries its big
-- string items out of band, as a Pipe sends a string raw: cjson scans
-- every byte of a string (and base64 codes bytes that are not UTF-8),
-- where a copy is 5-10x faster. The form, written only for such lists:
--   "\178" <JSON length> {" " <index> " " <length>} "\n" <JSON> <strings>
-- where the JSON is the list with those items left out (holes).
local ATTACH_MAGIC = 0xB2
local ATTACH_MIN = 65536
local MAX_ITEMS = 2 ^ 31 - 1          -- past any list a pool could send
local concat = table.concat

-- The pickle of t[1..n] (JSON); big strings are taken out of t. A list
-- of numbers and short strings (a map of tiny tasks) is written by
-- C.jsonlist: the same text as cjson's, 3-10x faster (lpickle_json.c).
local function dumps_json_list(t, n, name)
  local text = jsonlist(t, 1, n, classes)
  if text then return text end
  local head, parts
  for i = 1, n do
    local v = t[i]
    if type(v) == "string" and #v >= ATTACH_MIN then
      head, parts = head or {}, parts or {"", ""}
      head[#head + 1] = i .. " " .. #v
      parts[#parts + 1] = v
      t[i] = nil
    end
  end
  local json = dumps_json(t, name)
  if not head then return json end
  parts[1] = format("%c%d %s\n", ATTACH_MAGIC, #json, concat(head, " "))
  parts[2] = json
  return joinbytes(parts)   -- an lmp.Bytes: one copy, freed once sent
end

-- The list in such a payload (a string or an lmp.Bytes).
local function loads_json_list(p, nofunc)
  local size, nl, want = #p, nil, 64
  repeat                                -- the header ends at the first "\n"
    want = want * 16
    nl = find(part(p, 1, want), "\n", 1, true)
  until nl or want >= size
  if not nl then bad("list header without an end") end
  local head = part(p, 2, nl - 1)
  local jlen = tonumber(head:match("^(%d+)") or "")
  if not jlen or not head:match("^%d+[ %d]*$") or jlen > size then bad("bad list header") end
  local at = nl + jlen
  local t = loads_json(part(p, nl + 1, at), nofunc)
  if type(t) ~= "table" then bad("list header on a value that is not a list") end
  local last = 0                        -- indexes ascend, as written
  for i, len in head:gmatch(" (%d+) (%d+)") do
    i, len = tonumber(i), tonumber(len)
    if i <= last or i > MAX_ITEMS or at + len > size or t[i] ~= nil then
      bad("bad list item " .. i)
    end
    last = i
    t[i] = part(p, at + 1, at + len)
    at = at + len
  end
  if at ~= size then bad("list of " .. size .. " bytes, header says " .. at) end
  return t
end

-- Reads any form (the first byte tells) from a string or an lmp.Bytes.
local BRACKET, BRACE = byte("["), byte("{")
local function loads_any(p, nofunc)
  local b = first_byte(p)
  if b == BINARY_MAGIC then return bloads(p, nofunc, classes) end
  if b == ATTACH_MAGIC then return loads_json_list(p, nofunc) end
  if b == BRACKET or b == BRACE then   -- plain data, read in C (lpickle_json.c)
    local t = jsonload(p)
    if t ~= nil then return t end
  end
  return loads_json(as_string(p), nofunc)
end

--- _loads_payload(p) -> v: loads of a pool's payload (the caller frees
-- an lmp.Bytes).
function M._loads_payload(p)
  return loads_any(p, false)
end

--- loads(s [, opts]) -> v. Reads either format. opts.functions = false
-- refuses functions (and modules not yet loaded) with a pickle error.
function M.loads(s, opts)
  if type(s) ~= "string" then
    error("bad argument #1 to 'loads' (string expected, got " .. type(s) .. ")", 2)
  end
  check_opts(opts, "loads")
  return loads_any(s, opts ~= nil and opts.functions == false)
end

--- decoder() -> function(s) returning loads(s) with no options: what a
-- queue or a pipe calls for each item, without loads' argument checks.
function M.decoder()
  return loads_any
end

--- register(name, mt): tables whose metatable is mt (and mt itself, and
-- userdata with __pickle/__unpickle in mt) travel as the name; the reader
-- must have registered the same name. Returns mt.
function M.register(name, mt)
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'register' (non-empty string expected)", 2)
  end
  if type(mt) ~= "table" then
    error("bad argument #2 to 'register' (table expected, got " .. type(mt) .. ")", 2)
  end
  local old = rawget(classes, name)
  if old ~= nil then class_names[old] = nil end
  classes[name] = mt
  class_names[mt] = name
  C.names_changed()
  return mt
end

--- encoder(codec) -> function(v, name) returning the pickled string.
function M.encoder(codec)
  if codec == nil or codec == "json" then
    return function(v, name) return dumps_json(v, name) end
  elseif codec == "binary" then
    return function(v, name) return bdumps(v, name, classes) end
  end
  error("bad argument #1 to 'encoder' (\"json\" or \"binary\" expected)", 2)
end

-- ---------------------------------------------------------------- the default codec
-- The one place that decides which codec an object gets when its
-- constructor is not told (`codec =` absent): every Pool, ThreadPool,
-- Queue, JoinableQueue, SimpleQueue, Pipe, Connection and RedisPool asks
-- default_codec() when it is made. The switch is set by set_codec, or by
-- the environment variable LMP_CODEC, read once when this module loads.
-- Unset, the default is JSON (ThreadPool passes its own, "binary").
-- pickle.dumps, encoder(nil) and the manager protocol never follow it:
-- their default stays JSON.

local CODECS = {json = true, binary = true}
local switch = nil         -- "json" | "binary" once set; nil: not set
local switch_err = nil     -- the message for a bad LMP_CODEC (raised at first use)

do
  local env = os.getenv("LMP_CODEC")
  if env ~= nil and env ~= "" then
    if CODECS[env] then
      switch = env
    else
      switch_err = format("LMP_CODEC=%q is not a codec: set it to \"json\" or "
        .. "\"binary\", or unset it", env)
    end
  end
end

local function check_switch()
  if switch_err then error(switch_err, 0) end
end

--- set_codec(codec): the default codec of every Pool, ThreadPool, Queue,
-- JoinableQueue, SimpleQueue, Pipe, Connection and RedisPool made from now
-- on, in this process and in the children it starts afterwards (an
-- explicit `codec =` still wins). Overrides LMP_CODEC, a bad one included.
function M.set_codec(codec)
  if not CODECS[codec] then
    error(format("bad argument #1 to 'set_codec' (\"json\" or \"binary\" expected, got %s)",
      type(codec) == "string" and format("%q", codec) or type(codec)), 2)
  end
  switch, switch_err = codec, nil
end

--- get_codec() -> the default codec ("json" unless set), and true when the
-- switch is set (by set_codec or LMP_CODEC). Raises for a bad LMP_CODEC.
function M.get_codec()
  check_switch()
  return switch or "json", switch ~= nil
end

--- default_codec([builtin]) -> the codec for an object made now without
-- `codec =`: the switch when set, else builtin (default "json"). Raises
-- for a bad LMP_CODEC (unless set_codec was called).
function M.default_codec(builtin)
  check_switch()
  return switch or builtin or "json"
end

--- resolve_codec(codec [, builtin]) -> codec when it is "json" or
-- "binary", default_codec(builtin) when it is nil, else nil (the caller
-- raises its own argument error).
function M.resolve_codec(codec, builtin)
  if codec == nil then return M.default_codec(builtin) end
  if CODECS[codec] then return codec end
  return nil
end

-- The switch as it is (set, unset or bad), for a spawned child or a
-- thread's own Lua state to take over: _codec_restore(_codec_state()).
function M._codec_state()
  return {codec = switch, err = switch_err}
end

function M._codec_restore(st)
  if type(st) ~= "table" then return end
  switch = CODECS[st.codec] and st.codec or nil
  switch_err = type(st.err) == "string" and st.err or nil
end

--- list_encoder(codec) -> function(list, n, name) returning the pickle of
-- list[1..n], which it may change (a pool's chunk of results or of lazy
-- arguments: JSON takes its big strings out of it, see dumps_json_list).
-- Binary gives a pickle of 64 KiB or more as an lmp.Bytes, which the
-- caller frees once sent (slice_encoder too).
function M.list_encoder(codec)
  if codec == nil or codec == "json" then return dumps_json_list end
  if codec == "binary" then
    return function(list, n, name) return bdumps(list, name, classes, 1, n, true) end
  end
  error("bad argument #1 to 'list_encoder' (\"json\" or \"binary\" expected)", 2)
end

--- slice_encoder(codec) -> function(list, first, last, name) returning
-- the pickle of {list[first], ..., list[last]} (nil holes kept): a pool's
-- chunk of arguments, written without building that table when it can.
function M.slice_encoder(codec)
  if codec == nil or codec == "json" then
    return function(list, first, last, name)
      if last < first - 1 then error("bad argument #3 (slice ends before it starts)", 2) end
      local text = jsonlist(list, first, last, classes)
      if text then return text end
      local t, m = {}, 0
      for i = first, last do
        m = m + 1
        t[m] = list[i]
      end
      return dumps_json_list(t, m, name)
    end
  elseif codec == "binary" then
    return function(list, first, last, name)
      return bdumps(list, name, classes, first, last, true)
    end
  end
  error("bad argument #1 to 'slice_encoder' (\"json\" or \"binary\" expected)", 2)
end

--- loads_into(s, out, offset, n): s holds a list of at most n items (the
-- pickle of a table whose keys are in 1..n); item i is stored in
-- out[offset + i]. A pool files a chunk of results this way. s may be
-- an lmp.Bytes (a pool's big payload), read in place in the binary form.
function M.loads_into(s, out, offset, n)
  local b, t = first_byte(s), nil
  if b == BINARY_MAGIC then return bloads_into(s, false, classes, out, offset, n) end
  if b == BRACKET then
    if jsonload(s, out, offset, n) then return end
    t = loads_json(as_string(s), false)   -- not plain: cjson's turn
  else
    t = loads_any(s, false)
  end
  if type(t) ~= "table" then raise("malformed input: not a list") end
  for i = 1, n do out[offset + i] = t[i] end
end

M.MAX_DEPTH = MAX_DEPTH
M.null = null
return M
