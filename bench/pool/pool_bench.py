# Python's side of bench/pool: prints "name=value" pairs on one line.
import multiprocessing as mp, os, time

def noop(x): return x
def cpu_1ms(x):
    t = time.process_time() + 0.001
    while time.process_time() < t: pass
    return x

def best(f, reps=3):
    b = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter(); f(); b = min(b, time.perf_counter() - t0)
    return b

def rss_pss(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"): rss = int(line.split()[1])
            if line.startswith("Pss:"): pss = int(line.split()[1])
    return rss, pss

if __name__ == "__main__":
    mp.set_start_method("fork")
    out = {}
    items = list(range(100000))
    with mp.Pool(2) as pool:
        # best of 10 (of 5 for 1M) on both sides: one map of 100k takes
        # 5-20 ms, and this shared machine's noise is larger than that
        out["map_default"] = len(items) / best(lambda: pool.map(noop, items), 10)
        out["map_chunk1"] = len(items) / best(lambda: pool.map(noop, items, 1), 1)
        big = list(range(1000000))
        out["map_1m"] = len(big) / best(lambda: pool.map(noop, big), 5)
        n = 2000
        out["apply_latency"] = best(lambda: [pool.apply_async(noop, (1,)).get() for _ in range(n)]) / n
        out["imap_unordered1"] = len(items) / best(lambda: list(pool.imap_unordered(noop, items, 1)), 1)
        time.sleep(0.5)   # idle, as the lmp side measures it
        pids = [p.pid for p in pool._pool]
        rss, pss = rss_pss(pids[0])
        out["idle_rss_kb"], out["idle_pss_kb"] = rss, pss
    # a fresh pool's first map of 60 strings of 1 MiB, there and back; then warm
    blobs = [b"x" * (1 << 20) for _ in range(60)]
    t0 = time.perf_counter()
    with mp.Pool(2) as p:
        t1 = time.perf_counter(); p.map(noop, blobs); cold = time.perf_counter() - t1
        warm = best(lambda: p.map(noop, blobs))
    out["big_cold_mibs"] = 2 * 60 / cold
    out["big_warm_mibs"] = 2 * 60 / warm
    # the same with 16 lists of 131072 floats (1 MiB of doubles each)
    tabs = [[i + j / 8 for j in range(1, 131073)] for i in range(1, 17)]
    with mp.Pool(2) as p:
        t1 = time.perf_counter(); p.map(noop, tabs); cold = time.perf_counter() - t1
        warm = best(lambda: p.map(noop, tabs))
    out["nums_cold_mibs"] = 2 * 16 / cold
    out["nums_warm_mibs"] = 2 * 16 / warm
    def start_stop():
        p = mp.Pool(2); p.close(); p.join()
    out["start_join"] = best(start_stop, 20)
    for w in (1, 2, 4):
        with mp.Pool(w) as pool:
            out[f"cpu_{w}"] = 400 / best(lambda: pool.map(cpu_1ms, range(400), 1), 1)
    print(" ".join(f"{k}={v}" for k, v in out.items()))
