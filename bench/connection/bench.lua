--- bench/connection: lmp.connection Listener/Client over TCP loopback,
-- without and with an authkey: round trips of a small value through an
-- echo server in a child process (one connection), and connections per
-- second (connect, handshake, one round trip, close), against Python's
-- multiprocessing.connection in the same run (bench.py).
local lmp = require "lmp"
local R = require "report"
local L = lmp.connection

local N = tonumber(os.getenv("N")) or 20000
local NC = tonumber(os.getenv("NC")) or 1000
local KEY = "bench-key"

local function serve(key, out)
  local l = L.Listener{address = {"127.0.0.1", 0}, authkey = key}
  out:send(l.address)
  while true do
    local ok, c = pcall(l.accept, l)
    if ok then
      while true do
        local got, v = pcall(c.recv, c)
        if not got then break end
        if v == "quit" then c:close() l:close() return end
        c:send(v)
      end
      c:close()
    end
  end
end

local function run(key)
  local r, w = lmp.Pipe{duplex = false}
  local p = lmp.Process{target = serve, args = {key, w}}
  p:start()
  w:close()
  local addr = r:recv(30)
  r:close()
  local c = L.Client(addr, {authkey = key, timeout = 10})
  local t = lmp.time()
  for i = 1, N do
    c:send({i, "x"})
    c:recv()
  end
  local rtt = N / (lmp.time() - t)
  c:close()
  t = lmp.time()
  for i = 1, NC do
    c = L.Client(addr, {authkey = key, timeout = 10})
    c:send({i, "x"})
    c:recv()
    c:close()
  end
  local conns = NC / (lmp.time() - t)
  c = L.Client(addr, {authkey = key, timeout = 10})
  c:send("quit")
  c:close()
  p:join(30)
  return rtt, conns
end

local rtt0, conn0 = run(nil)
local rtt1, conn1 = run(KEY)

local f = io.popen(string.format("python3 %s/bench/connection/bench.py %d %d",
  os.getenv("LMP_ROOT") or ".", N, NC))
local py = {}
for x in f:read("*a"):gmatch("[%d%.eE+-]+") do py[#py + 1] = tonumber(x) end
f:close()

R.line("Listener/Client round trips, no authkey", rtt0, py[1], "rt/s", "higher")
R.line("Listener/Client round trips, authkey", rtt1, py[2], "rt/s", "higher")
R.line("Client connect+round trip+close, no authkey", conn0, py[3], "conn/s", "higher")
R.line("Client connect+handshake+rt+close, authkey", conn1, py[4], "conn/s", "higher")
