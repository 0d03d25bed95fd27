-- Prints bench/prefork's figures: report_lines.lua lmp py_prefork py_forking children clients
local R = require "report"
local lmp_rps, pre, fork = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local what = string.format("prefork HTTP/1.0 server, %s children, %s clients", arg[4], arg[5])
R.line(what .. " (py prefork)", lmp_rps, pre, "req/s", "higher", "goal >= 1x")
R.line(what .. " (py ForkingTCPServer)", lmp_rps, fork, "req/s", "higher")
