# Python's side of bench/manager: a BaseManager serving one queue.Queue per
# client over TCP loopback. Prints: pairs/s (1 client), pairs/s (8 clients,
# aggregate), connect+auth+first call (ms, a fresh process).
import multiprocessing as mp, queue, sys, time
from multiprocessing.managers import BaseManager

KEY = b"bench-key"
QUEUES = [queue.Queue() for _ in range(8)]

class QM(BaseManager):
    pass

QM.register("get_q", callable=lambda i: QUEUES[i])

def pairs(addr, i, n, out):
    m = QM(address=addr, authkey=KEY)
    m.connect()
    q = m.get_q(i)
    t = time.perf_counter()
    for k in range(n):
        q.put(k)
        q.get()
    out.put(time.perf_counter() - t)

def first_call(addr, out):
    t = time.perf_counter()
    m = QM(address=addr, authkey=KEY)
    m.connect()
    m.get_q(0).qsize()
    out.put((time.perf_counter() - t) * 1000)

def run(target, addr, clients, *args):
    out = mp.Queue()
    ps = [mp.Process(target=target, args=(addr,) + ((i,) if target is pairs else ()) + args + (out,))
          for i in range(clients)]
    t = time.perf_counter()
    for p in ps: p.start()
    res = [out.get() for _ in ps]
    for p in ps: p.join()
    return res, time.perf_counter() - t

if __name__ == "__main__":
    mp.set_start_method("fork")
    n1, n8 = int(sys.argv[1]), int(sys.argv[2])
    m = QM(address=("127.0.0.1", 0), authkey=KEY)
    m.start()
    one, _ = run(pairs, m.address, 1, n1)
    eight, _ = run(pairs, m.address, 8, n8)
    conn, _ = run(first_call, m.address, 1)
    m.shutdown()
    print(n1 / one[0], 8 * n8 / max(eight), conn[0])
