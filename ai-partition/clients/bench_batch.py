#!/usr/bin/env python3
"""Aggregate decode throughput under concurrent streams: `nexus-ai serve` (continuous
batching) against llama.cpp's own `llama-server`, same GGUF, same threads, same number of
parallel slots and context per slot, greedy, same token budget, in one run.

Run by `cargo xtask bench batch` (which builds both servers). Python standard library only.

For each level (concurrent streams) and round, both servers get the same distinct prompts
at once through /v1/chat/completions (streamed, greedy, max_tokens N). The decode rate is
the tokens all streams generated after their first one, over the time from the first
stream's first token to the last stream's last token (the prompts are evaluated before
that window, or inside it on both servers alike); the wall rate counts every token over
the whole burst, prompts included. Rounds alternate which server goes first; the median
round is reported.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

TOPICS = [
    "a lighthouse keeper", "a dragon who fears fire", "a robot learning to paint",
    "a city under the sea", "a clockmaker's apprentice", "a lost astronaut",
    "a talking fox", "a haunted library", "a desert caravan", "a winter festival",
    "a pirate without a ship", "a garden on Mars", "a detective cat", "an old violin",
    "a mountain village", "a time-travelling chef", "a forgotten island", "a paper airplane",
    "a storm chaser", "a midnight train", "a secret map", "a shy giant", "a glass castle",
    "a river that flows uphill", "a library of dreams", "a brave snail", "a broken compass",
    "a village of inventors", "a whale who sings", "a tiny wizard", "a frozen volcano",
    "a market in the clouds",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, name, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    sys.exit(f"{name} was not ready after {timeout}s")


def chat(base, model, prompt, n):
    """One streamed request: (text, completion tokens, first-token time, last-token time)."""
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": n,
        "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    text, tokens, first, last = [], None, None, None
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            v = json.loads(line[6:])
            if v.get("usage"):
                tokens = v["usage"]["completion_tokens"]
            for c in v.get("choices") or []:
                piece = (c.get("delta") or {}).get("content")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(piece)
    if tokens is None or first is None:
        raise RuntimeError("no tokens or no usage in the stream")
    return "".join(text), tokens, first, last


def burst(base, model, prompts, n):
    """All prompts at once; (decode tok/s, wall tok/s, texts, tokens)."""
    out = [None] * len(prompts)
    errors = []

    def one(i, p):
        try:
            out[i] = chat(base, model, p, n)
        except Exception as e:  # reported below, the run stops
            errors.append(f"{p!r}: {e}")

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit("request failed: " + "; ".join(errors))
    tokens = sum(o[1] for o in out)
    window = max(o[3] for o in out) - min(o[2] for o in out)
    decode = sum(o[1] - 1 for o in out) / window if window > 0 else 0.0
    return decode, tokens / wall, [o[0] for o in out], tokens


def mapped_cpu_variant(pid):
    """The ggml CPU variant a process loaded (from its memory map)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                m = re.search(r"libggml-cpu-([\w.]+)\.so", line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nexus-ai", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=1024, help="context per slot")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    slots = max(levels)

    ours_port, ref_port = free_port(), free_port()
    env = dict(os.environ)
    # Both sides read the weights the same way: mmapped, on 4 KiB pages (llama-server's
    # default); nexus-ai would otherwise load them into huge pages.
    env["NEXUS_AI_HUGEPAGES"] = "0"
    env["NEXUS_AI_LOG"] = "warn"
    ours = subprocess.Popen(
        [args.nexus_ai, "serve", "--host", "127.0.0.1", "--port", str(ours_port), "--threads", str(args.threads),
         "--parallel", str(slots), "--ctx", str(args.ctx), "--models-dir", args.models_dir, "--keep-alive=-1",
         "--preload", "smollm2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ref = subprocess.Popen(
        [args.llama_server, "-m", args.gguf, "--host", "127.0.0.1", "--port", str(ref_port),
         "-t", str(args.threads), "-tb", str(args.threads), "-np", str(slots), "-c", str(slots * args.ctx),
         "-b", "512", "-ub", "512", "-fa", "off", "-ngl", "0", "--no-warmup"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [None for _ in ref.stderr], daemon=True).start()
    threading.Thread(target=lambda: [None for _ in ours.stderr], daemon=True).start()
    try:
        base_ours = f"http://127.0.0.1:{ours_port}"
        base_ref = f"http://127.0.0.1:{ref_port}"
        wait_ready(base_ours + "/api/version", ours, "nexus-ai serve")
        wait_ready(base_ref + "/health", ref, "llama-server")
        print(f"llama-server CPU variant loaded: {mapped_cpu_variant(ref.pid)}")
        print(f"threads {args.threads}, {slots} slots of {args.ctx} tokens each, greedy, max_tokens {args.n}, "
              f"{args.rounds} rounds per level (median)")
        sides = [("nexus-ai", base_ours, "smollm2"), ("llama-server", base_ref, "smollm2")]
        # Warm-up: one request each, also the same-output check.
        texts = {}
        for name, base, model in sides:
            _, _, t, _ = burst(base, model, ["Write a short poem about the sea."], args.n)
            texts[name] = t[0]
        same = texts["nexus-ai"] == texts["llama-server"]
        print(f"greedy warm-up text identical on both: {'yes' if same else 'no'}")
        topic = iter(TOPICS * 1000)
        results = {}
        for level in levels:
            rates = {name: [] for name, _, _ in sides}
            walls = {name: [] for name, _, _ in sides}
            for r in range(args.rounds):
                prompts = [f"Write a long story about {next(topic)}." for _ in range(level)]
                order = sides if r % 2 == 0 else sides[::-1]
                for name, base, model in order:
                    rate, wall, _, tokens = burst(base, model, prompts, args.n)
                    rates[name].append(rate)
                    walls[name].append(wall)
                    print(f"  {level} streams, round {r + 1}: {name:12} decode {rate:7.1f} tok/s, wall {wall:7.1f} tok/s ({tokens} tokens)", flush=True)
            results[level] = {k: statistics.median(v) for k, v in rates.items()}
            results[level].update({k + " wall": statistics.median(v) for k, v in walls.items()})
        print()
        print("aggregate decode tokens/s (median of rounds):")
        print(f"{'streams':>7} | {'nexus-ai':>9} | {'llama-server':>12} | {'ratio':>6} | {'vs our 1 stream':>15} | {'wall ratio':>10}")
        print("-" * 76)
        one = results[levels[0]]["nexus-ai"]
        for level in levels:
            res = results[level]
            o, f = res["nexus-ai"], res["llama-server"]
            w = res["nexus-ai wall"] / res["llama-server wall"]
            print(f"{level:>7} | {o:>9.1f} | {f:>12.1f} | {o / f:>5.3f}x | {o / one:>14.2f}x | {w:>9.3f}x")
        print(json.dumps({"levels": {str(k): v for k, v in results.items()}, "threads": args.threads, "slots": slots}))
    finally:
        for p in (ours, ref):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
