# Python side of bench/sync: prints "<lock uncontended pairs/s>
# <lock 2-proc pairs/s> <value 2-proc adds/s>".
import multiprocessing as mp
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
M = int(sys.argv[2]) if len(sys.argv) > 2 else 200000


def uncontended():
    lock = mp.Lock()
    acq, rel = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(N):
        acq()
        rel()
    return N / (time.perf_counter() - t0)


def locker(lock, n):
    for _ in range(n):
        lock.acquire()
        lock.release()


def adder(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def two(target, obj):
    ps = [mp.Process(target=target, args=(obj, M)) for _ in range(2)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return 2 * M / (time.perf_counter() - t0)


if __name__ == "__main__":
    mp.set_start_method("fork")
    u = max(uncontended() for _ in range(3))
    c = max(two(locker, mp.Lock()) for _ in range(3))
    vals = []
    for _ in range(3):
        v = mp.Value("q", 0)
        vals.append(two(adder, v))
        assert v.value == 2 * M
    print(u, c, max(vals))
