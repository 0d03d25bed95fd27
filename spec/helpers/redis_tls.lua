--- Spec helpers for Redis over TLS: a throw-away CA with server and client
-- certificates made by the `openssl` command (EC P-256 keys: fast), and a
-- private TLS-only redis-server on a free port. Every wait is bounded;
-- stop() removes what start() made.
local H = require "helper"
local RH = require "helpers.redis"
local RC = require "lmp.c.redis"

local RT = {}
local q = H.shell_quote

local function openssl(args)
  local out = RH.sh("openssl " .. args .. " 2>&1; echo \"rc=$?\"")
  assert(out:match("rc=0%s*$"), "openssl " .. args .. ": " .. out)
end

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

-- A key and a certificate signed by ca (or self-signed when ca is nil).
local function issue(dir, name, cn, ca, ext)
  local key, crt = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".crt"
  if not ca then
    openssl(string.format("req -x509 %s -keyout %s -out %s -days 2 -subj %s",
      EC, q(key), q(crt), q("/CN=" .. cn)))
    return crt, key
  end
  local csr, extfile = dir .. "/" .. name .. ".csr", dir .. "/" .. name .. ".ext"
  local f = assert(io.open(extfile, "w"))
  f:write(ext, "\n")
  f:close()
  openssl(string.format("req %s -keyout %s -out %s -subj %s", EC, q(key), q(csr),
    q("/CN=" .. cn)))
  openssl(string.format("x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -out %s "
    .. "-days 2 -extfile %s", q(csr), q(ca.crt), q(ca.key), q(crt), q(extfile)))
  return crt, key
end

--- certs() -> {dir, ca, server_crt, server_key, client_crt, client_key,
-- other_ca}: a CA, a server certificate for IP 127.0.0.1 and DNS localhost,
-- a client certificate, and an unrelated CA. remove_certs(c) deletes them.
function RT.certs()
  local dir = RH.sh("mktemp -d /tmp/lmp-tls-spec.XXXXXX"):gsub("%s+$", "")
  local c = {dir = dir}
  local ca = {}
  ca.crt, ca.key = issue(dir, "ca", "lmp spec CA")
  c.ca = ca.crt
  c.server_crt, c.server_key = issue(dir, "server", "localhost", ca,
    "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth")
  c.client_crt, c.client_key = issue(dir, "client", "lmp worker", ca,
    "extendedKeyUsage = clientAuth")
  c.other_ca = issue(dir, "other", "another CA")
  return c
end

function RT.remove_certs(c)
  if c and c.dir then RH.sh("rm -rf " .. q(c.dir)) end
end

local Server = {}
Server.__index = Server

--- start(certs, {auth_clients = bool}) -> server {port, url, pid, dir,
-- tls = the client options that verify it}. TLS only (--port 0).
function RT.start(certs, opts)
  opts = opts or {}
  local self = setmetatable({port = H.free_port()}, Server)
  self.dir = RH.sh("mktemp -d /tmp/lmp-tls-redis.XXXXXX"):gsub("%s+$", "")
  self.url = string.format("rediss://127.0.0.1:%d/0", self.port)
  self.tls = {ca_file = certs.ca}
  if opts.auth_clients then
    self.tls.cert_file, self.tls.key_file = certs.client_crt, certs.client_key
  end
  local args = {"redis-server", "--port", "0", "--tls-port", self.port,
    "--bind", "127.0.0.1", "--tls-cert-file", q(certs.server_crt),
    "--tls-key-file", q(certs.server_key), "--tls-ca-cert-file", q(certs.ca),
    "--tls-auth-clients", opts.auth_clients and "yes" or "no",
    "--dir", q(self.dir), "--save", "''", "--appendonly", "no",
    "--daemonize", "yes", "--pidfile", q(self.dir .. "/redis.pid"),
    "--logfile", q(self.dir .. "/redis.log")}
  RH.sh(table.concat(args, " ") .. " 2>&1")
  local url, tls = self.url, self.tls
  local ok = H.wait_until(function()
    return pcall(function() RC.connect(url, {timeout = 0.5, tls = tls}):close() end)
  end, 10, 0.02)
  self.pid = tonumber(RH.read_file(self.dir .. "/redis.pid"))
  if not ok then
    local log = RH.read_file(self.dir .. "/redis.log")
    self:stop()
    error("TLS redis-server did not start: " .. tostring(log))
  end
  return self
end

function Server:stop()
  if self.pid then
    RH.sh(string.format("kill -KILL %d 2>/dev/null", self.pid))
    local pid = self.pid
    assert(H.wait_until(function() return not RH.alive(pid) end, 10),
      "redis-server did not stop")
    self.pid = nil
  end
  RH.sh("rm -rf " .. q(self.dir))
end

--- client() -> lmp.redis client on this server (verified with its CA).
function Server:client()
  return require("lmp.redis").client(self.url, {timeout = 5, reconnect_timeout = 10,
    tls = self.tls})
end

--- cli_args(tls) -> the `lmp worker` flags for a tls option table.
function RT.cli_args(tls)
  local a = {}
  if tls.ca_file then a[#a + 1] = "--tls-ca " .. q(tls.ca_file) end
  if tls.cert_file then a[#a + 1] = "--tls-cert " .. q(tls.cert_file) end
  if tls.key_file then a[#a + 1] = "--tls-key " .. q(tls.key_file) end
  if tls.server_name then a[#a + 1] = "--tls-server-name " .. q(tls.server_name) end
  if tls.verify == false then a[#a + 1] = "--tls-no-verify" end
  return table.concat(a, " ")
end

return RT
