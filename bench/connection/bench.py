# Python's side of bench/connection: an echo server in a child process
# behind multiprocessing.connection.Listener on TCP loopback.
# argv: N (round trips), NC (connections). Prints four numbers: round
# trips/s without and with an authkey, connections/s (connect, handshake,
# one round trip, close) without and with an authkey.
import multiprocessing as mp, sys, time
from multiprocessing.connection import Listener, Client

KEY = b"bench-key"

def serve(key, out):
    with Listener(("127.0.0.1", 0), authkey=key) as l:
        out.send(l.address)
        while True:
            try:
                c = l.accept()
            except Exception:        # a failed handshake: go on
                continue
            with c:
                while True:
                    try:
                        v = c.recv()
                    except EOFError:
                        break
                    if v == "quit":
                        return
                    c.send(v)

def run(key, n, nc):
    r, w = mp.Pipe(duplex=False)
    p = mp.Process(target=serve, args=(key, w))
    p.start()
    addr = r.recv()
    c = Client(addr, authkey=key)
    t = time.perf_counter()
    for i in range(n):
        c.send([i, "x"])
        c.recv()
    rtt = n / (time.perf_counter() - t)
    c.close()
    t = time.perf_counter()
    for i in range(nc):
        c = Client(addr, authkey=key)
        c.send([i, "x"])
        c.recv()
        c.close()
    conns = nc / (time.perf_counter() - t)
    c = Client(addr, authkey=key)
    c.send("quit")
    c.close()
    p.join()
    return rtt, conns

if __name__ == "__main__":
    mp.set_start_method("fork")
    n, nc = int(sys.argv[1]), int(sys.argv[2])
    a = run(None, n, nc)
    b = run(KEY, n, nc)
    print(a[0], b[0], a[1], b[1])
