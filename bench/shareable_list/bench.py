# Python side of bench/shareable_list: prints "<int ops/s> <str ops/s>",
# each op one read or one write of a slot, 2 processes at once.
import multiprocessing as mp
import sys
import time
from multiprocessing import shared_memory

M = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
STRS = ["%015d" % i for i in range(16)]


def ints(sl, k, n):
    for _ in range(n):
        sl[k] = sl[k] + 1


def strs(sl, k, n):
    for i in range(n):
        sl[k] = STRS[i & 15]
        _ = sl[k]


def two(target, sl):
    ps = [mp.Process(target=target, args=(sl, k, M)) for k in (0, 1)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return 2 * 2 * M / (time.perf_counter() - t0)


def run(target, init, check):
    best = 0
    for _ in range(3):
        sl = shared_memory.ShareableList(init)
        try:
            best = max(best, two(target, sl))
            check(sl)
        finally:
            sl.shm.close()
            sl.shm.unlink()
    return best


if __name__ == "__main__":
    mp.set_start_method("fork")
    def check_ints(sl):
        assert sl[0] == M and sl[1] == M, (sl[0], sl[1])
    i = run(ints, [0, 0, 1.5, "x"], check_ints)
    s = run(strs, ["x" * 15, "y" * 15, 0], lambda sl: None)
    print(i, s)
