# Python's side of bench/process.
import multiprocessing as mp, time
def f(): pass
def per(method, n):
    ctx = mp.get_context(method)
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=f); p.start(); p.join()
    return (time.perf_counter() - t0) / n
if __name__ == "__main__":
    per('forkserver', 1)   # starts the server: its start is not a child's
    print(f"fork={per('fork', 100)} spawn={per('spawn', 10)} "
          f"forkserver={per('forkserver', 100)}")
