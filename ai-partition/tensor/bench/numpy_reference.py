"""The numpy side of `cargo xtask bench tensor`: f32 GEMM GFLOP/s per size,
np.add and np.copyto in GB/s over 64 MiB arrays, on N threads of numpy's
BLAS; prints one JSON object with the BLAS kernel threadpoolctl reports."""

import json
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def best(budget, f):
    f()
    start = time.perf_counter()
    best_t = float("inf")
    runs = 0
    while runs < 3 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        f()
        best_t = min(best_t, time.perf_counter() - t)
        runs += 1
        if time.perf_counter() - start > 4 * budget and runs >= 3:
            break
    return best_t


def main():
    threads = int(sys.argv[sys.argv.index("--threads") + 1])
    sizes = [256, 512, 1024, 2048]
    if "--sizes" in sys.argv:
        sizes = [int(s) for s in sys.argv[sys.argv.index("--sizes") + 1].split(",")]
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    out = {"threads": threads, "numpy": np.__version__, "blas": blas[0] if blas else None, "gemm": []}
    with threadpool_limits(limits=threads, user_api="blas"):
        for n in sizes:
            i = np.arange(n * n)
            a = ((i * 7 % 13) * 0.1).astype(np.float32).reshape(n, n)
            b = ((i * 5 % 11) * 0.1).astype(np.float32).reshape(n, n)
            c = np.empty((n, n), np.float32)
            t = best(1.0, lambda: np.matmul(a, b, out=c))
            out["gemm"].append({"n": n, "gflops": round(2 * n**3 / t / 1e9, 2)})
    # numpy's elementwise loops are single-threaded whatever the BLAS does.
    ln = 16 << 20
    x = np.full(ln, 1.5, np.float32)
    y = np.full(ln, 2.5, np.float32)
    z = np.empty(ln, np.float32)
    add = best(1.0, lambda: np.add(x, y, out=z))
    cp = best(1.0, lambda: np.copyto(z, x))
    out["add_gbps"] = round(3 * ln * 4 / add / 1e9, 2)
    out["copy_gbps"] = round(2 * ln * 4 / cp / 1e9, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
