# Python's side of bench/thread: multiprocessing.pool.ThreadPool map of N
# tiny tasks, and of CPU-bound ~1 ms tasks on 1 and 2 threads. Prints
# tiny tasks/s, cpu tasks/s (1 thread), cpu tasks/s (2 threads).
import sys, time
from multiprocessing.pool import ThreadPool

def tiny(x):
    return x + 1

def cpu(n):
    s = 0
    for i in range(n):
        s += i % 7
    return s

def rate(pool, fn, items, chunksize=None):
    t = time.perf_counter()
    pool.map(fn, items, chunksize)
    return len(items) / (time.perf_counter() - t)

if __name__ == "__main__":
    n_tiny, n_cpu, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with ThreadPool(2) as p:
        items = list(range(n_tiny))
        tiny_rate = max(rate(p, tiny, items) for _ in range(5))   # best of 5, as lmp's
    res = []
    for threads in (1, 2):
        with ThreadPool(threads) as p:
            res.append(rate(p, cpu, [work] * n_cpu, 1))
    print(tiny_rate, res[0], res[1])
