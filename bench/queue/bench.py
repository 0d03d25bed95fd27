# Python side of bench/queue: prints "<Queue msgs/s> <SimpleQueue msgs/s>".
import multiprocessing as mp
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000


def producer(q, n):
    for i in range(n):
        q.put({"id": i, "name": "item", "ok": True})
    q.put(None)


def run(make):
    q = make()
    p = mp.Process(target=producer, args=(q, N))
    t0 = time.perf_counter()
    p.start()
    n = 0
    while q.get() is not None:
        n += 1
    dt = time.perf_counter() - t0
    p.join()
    assert n == N
    return N / dt


if __name__ == "__main__":
    mp.set_start_method("fork")
    print(max(run(mp.Queue) for _ in range(5)),
          max(run(mp.SimpleQueue) for _ in range(5)))
