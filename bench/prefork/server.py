"""Python equivalents of examples/prefork_server.lua for bench/prefork.

  python3 server.py PORT CHILDREN prefork   # Tornado-style: bind, fork N
                                            # children accepting on it
  python3 server.py PORT CHILDREN forking   # socketserver.ForkingTCPServer
                                            # (a fork per connection)
Same protocol and reply as the Lua example (HTTP/1.0, one request per
connection, body "task=N pid=P path=/...")."""
import os
import signal
import socket
import socketserver
import sys


def reply(wfile, task, path):
    body = ("task=%d pid=%d path=%s\n" % (task, os.getpid(), path)).encode()
    wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body))


def read_request(rfile):
    line = rfile.readline(65536)
    if not line:
        return None
    parts = line.split()
    while True:
        h = rfile.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
    return parts[1].decode() if len(parts) >= 2 else "/"


def prefork(port, n):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    pids = []
    for task in range(n):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                conn, _ = sock.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    rfile = conn.makefile("rb")
                    wfile = conn.makefile("wb")
                    path = read_request(rfile)
                    if path is not None:
                        reply(wfile, task, path)
                        wfile.flush()
                except OSError:
                    pass
                finally:
                    conn.close()
        pids.append(pid)

    def stop(*_):
        for p in pids:
            os.kill(p, signal.SIGTERM)
        for p in pids:
            os.waitpid(p, 0)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        path = read_request(self.rfile)
        if path is not None:
            reply(self.wfile, 0, path)


class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = 1024


def forking(port):
    with Server(("127.0.0.1", port), Handler) as srv:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        srv.serve_forever()


if __name__ == "__main__":
    port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    prefork(port, n) if mode == "prefork" else forking(port)
