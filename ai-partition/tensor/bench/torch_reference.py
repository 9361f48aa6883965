"""GPU reference for `cargo xtask bench tensor`: f32 GEMM GFLOP/s through
PyTorch (cuBLAS) on CUDA device 0, timed like tensor-bench --gpu (best of
repeated products, each waited for). TF32 is off, so cuBLAS computes in
full f32 as nexus-tensor's backend does. Prints one JSON object.

Usage: torch_reference.py [--sizes 256,512,1024,2048,4096]
"""

import argparse
import json
import time

import torch


def best(budget, f):
    f()
    torch.cuda.synchronize()
    start = time.perf_counter()
    best_t, runs = float("inf"), 0
    while runs < 3 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        f()
        torch.cuda.synchronize()
        best_t = min(best_t, time.perf_counter() - t)
        runs += 1
        if time.perf_counter() - start > 4 * budget and runs >= 3:
            break
    return best_t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="256,512,1024,2048,4096")
    sizes = [int(s) for s in p.parse_args().sizes.split(",") if s]
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda", 0)
    rows = []
    for n in sizes:
        i = torch.arange(n * n, device=dev)
        a = ((i * 7 % 13).float() * 0.1).reshape(n, n)
        b = ((i * 5 % 13).float() * 0.1).reshape(n, n)
        c = torch.empty(n, n, device=dev)
        t = best(1.0, lambda: torch.matmul(a, b, out=c))
        rows.append({"n": n, "gflops": round(2 * n**3 / t / 1e9, 1)})
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "device": torch.cuda.get_device_name(0),
                "gemm": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
