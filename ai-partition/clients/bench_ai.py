#!/usr/bin/env python3
"""`cargo xtask bench ai`: side by side on the same GGUF and thread count, in one run:

  llama.cpp direct  - llama-cpp-python, built from source for one ggml CPU variant
                      (the one nexus-ai runs here: same instruction sets, no -march=native)
  engine direct     - `nexus-ai bench-engine` (our engine, no service, no HTTP)
  HTTP API          - `nexus-ai serve`, POST /api/generate (raw prompt, greedy)

Prints the CPU, each side's ggml CPU variant and instruction sets, prompt and decode
tokens/s, the API's overhead over the engine, and a repeated-prompt-prefix case that shows
KV-cache reuse, as ratios. No speed thresholds, but it fails (exit 1) when the two sides
would not be comparable: different instruction sets, different huge-page use, or different
greedy output for the same prompt.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import llama_cpp

TASKS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle stays upright, step by step.",
    "Describe a walk through a busy market in the morning.",
    "List the steps to bake a loaf of bread and explain each one.",
    "Tell the history of the printing press in simple words.",
    "Write a letter to a friend about a trip to the mountains.",
]

SYSTEM = (
    "You are a careful assistant for a small library. The library opens at nine and closes at six, "
    "except on Sundays when it is closed. Members may borrow up to five books for three weeks, and may "
    "renew each book twice unless someone else has reserved it. Late returns cost ten cents a day per book. "
    "The children's section is on the ground floor, fiction on the first floor, and non-fiction, maps and "
    "the local history archive on the second floor. The reading room is quiet; phones must be silent. "
    "Printing costs five cents a page; scanning is free. Wi-Fi is free for members and guests. Answer "
    "politely and briefly, and when you do not know something, say so and suggest asking at the front desk."
)
QUESTIONS = [
    "When does the library open on Saturday?",
    "How many books can I borrow?",
    "Where are the maps?",
    "How much does printing cost?",
    "Can I renew a reserved book?",
    "Is there Wi-Fi for guests?",
]


def chatml(system, user):
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


OPENERS = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliet",
           "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango"]


def distinct_prompts(runs):
    # A different first token in each prompt: nothing can come from the KV cache
    # (checked against the engine's own count of evaluated tokens in the report).
    return [f"{OPENERS[i % len(OPENERS)]}: {TASKS[i % len(TASKS)]}\n" for i in range(runs + 1)]


def prefix_prompts(runs):
    return [chatml(SYSTEM, QUESTIONS[i % len(QUESTIONS)]) for i in range(runs + 1)]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------- the three contenders, one request at a time ----------
# Requests are interleaved (llama.cpp, engine, API, in a rotating order) so that load
# from other processes on a shared machine hits all three alike.


class LlamaCpp:
    def __init__(self, gguf, threads, huge_pages):
        # Huge pages: the weights in malloc'd memory (glibc's hugetlb tunable, set by xtask),
        # as nexus-ai loads them; otherwise mmapped from the file, as nexus-ai then does.
        self.llm = llama_cpp.Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512,
                                   use_mmap=not huge_pages, verbose=False)
        self.pid = os.getpid()

    def run(self, prompt, n, reset):
        if reset:
            self.llm.reset()
        llama_cpp.llama_perf_context_reset(self.llm._ctx.ctx)
        t = time.perf_counter()
        r = self.llm.create_completion(prompt, max_tokens=n, temperature=0, top_k=1, repeat_penalty=1.0)
        wall = time.perf_counter() - t
        d = llama_cpp.llama_perf_context(self.llm._ctx.ctx)
        return {
            "text": r["choices"][0]["text"],
            "generated": r["usage"]["completion_tokens"],
            "prompt_tokens": r["usage"]["prompt_tokens"],
            "prompt_evaluated": d.n_p_eval,
            "prompt_s": d.t_p_eval_ms / 1e3,
            "decoded": d.n_eval,
            "decode_s": d.t_eval_ms / 1e3,
            "wall_s": wall,
        }


class Engine:
    """`nexus-ai bench-engine`: our engine called directly, fed one prompt per line."""

    def __init__(self, nexus_ai, models_dir, model, threads, n):
        cmd = [nexus_ai, "bench-engine", model, "--prompts", "-", "--n", str(n), "--threads", str(threads), "--ctx", "1024"]
        if models_dir:
            cmd += ["--models-dir", models_dir]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.pid = self.proc.pid

    def run(self, prompt, n, reset):
        # The engine always reuses what it can of the previous prompt; distinct prompts
        # start with a different token, so nothing is reused for them.
        self.proc.stdin.write(json.dumps(prompt) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"nexus-ai bench-engine exited ({self.proc.wait()})")
        l = json.loads(line)
        return {
            "text": l["text"],
            "generated": l["generated_tokens"],
            "prompt_tokens": l["prompt_tokens"],
            "prompt_evaluated": l["prompt_tokens_evaluated"],
            "prompt_s": l["prompt_eval_ns"] / 1e9,
            # n tokens are n samples but n-1 decodes (the first comes from the prompt's
            # logits), as llama.cpp counts them.
            "decoded": max(l["generated_tokens"] - 1, 0),
            "decode_s": l["eval_ns"] / 1e9,
            "wall_s": l["wall_ns"] / 1e9,
            # llama_decode alone (llama_perf_context), the measure llama.cpp's row uses.
            "compute": {
                "prompt_tokens": c["prompt_tokens"],
                "prompt_evaluated": c["prompt_tokens"],
                "prompt_s": c["prompt_ns"] / 1e9,
                "decoded": c["decodes"],
                "decode_s": c["decode_ns"] / 1e9,
            } if (c := l.get("compute")) else None,
        }

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait()


class Api:
    """`nexus-ai serve`, POST /api/generate with a raw prompt, greedy, not streamed."""

    def __init__(self, nexus_ai, models_dir, model, threads):
        cmd = [nexus_ai, "serve", "--host", "127.0.0.1", "--port", "0", "--threads", str(threads), "--ctx", "1024", "--keep-alive=-1"]
        if models_dir:
            cmd += ["--models-dir", models_dir]
        self.model = model
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "NEXUS_AI_LOG": "info"})
        addr = None
        for line in self.proc.stderr:
            if "listening on http://" in line:
                addr = line.split("listening on http://")[1].split()[0]
                break
        if not addr:
            raise SystemExit("nexus-ai serve did not start")
        self.pid = self.proc.pid
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port))

    def run(self, prompt, n, reset):
        body = json.dumps({"model": self.model, "prompt": prompt, "raw": True, "stream": False, "keep_alive": -1, "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": n}})
        t = time.perf_counter()
        self.conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
        r = json.loads(self.conn.getresponse().read())
        wall = time.perf_counter() - t
        if "error" in r:
            raise SystemExit(f"API error: {r['error']}")
        return {
            "text": r["response"],
            "generated": r["eval_count"],
            "prompt_tokens": r["prompt_eval_count"],
            "prompt_s": r["prompt_eval_duration"] / 1e9,
            "decoded": max(r["eval_count"] - 1, 0),
            "decode_s": r["eval_duration"] / 1e9,
            "wall_s": wall,
            "compute_s": (r["prompt_eval_duration"] + r["eval_duration"]) / 1e9,
        }

    def stop(self):
        self.conn.close()
        self.proc.terminate()
        self.proc.wait()


def interleaved(contenders, prompts, n, reset):
    """Results per contender; the first prompt is a warm-up and not counted. Every
    contender must answer every prompt with the same greedy text (same tokens)."""
    out = {name: [] for name in contenders}
    names = list(contenders)
    for i, p in enumerate(prompts):
        order = names[i % len(names):] + names[: i % len(names)]
        answers = {}
        for name in order:
            r = contenders[name].run(p, n, reset)
            answers[name] = r
            if i > 0:
                out[name].append(r)
        first = names[0]
        for name in names[1:]:
            a, b = answers[first], answers[name]
            if (a["text"], a["generated"]) != (b["text"], b["generated"]):
                raise SystemExit(
                    f"FAIL: greedy outputs differ for prompt {p!r}:\n"
                    f"  {first} ({a['generated']} tokens): {a['text']!r}\n"
                    f"  {name} ({b['generated']} tokens): {b['text']!r}\n"
                    "the two sides do not compute the same thing; their speeds are not comparable")
    return out


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cpu_features(system_info):
    """The instruction sets in ggml's system info (`CPU : SSE3 = 1 | AVX2 = 1 | ...`)."""
    cpu = system_info.split("CPU :", 1)[1] if "CPU :" in system_info else ""
    cpu = cpu.split("\n")[0]
    feats = set()
    for part in cpu.split("|"):
        if "=" in part:
            k, v = (x.strip() for x in part.split("=", 1))
            if v == "1":
                feats.add(k)
    return feats


def huge_page_kib(pid):
    """AnonHugePages of a process (transparent huge pages in use), KiB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------- report ----------


def rates(rows, effective=False):
    """Median prompt and decode tokens/s. `effective`: prompt tokens over prompt time,
    counting tokens that came from the KV cache (what a client experiences)."""
    pk = "prompt_tokens" if effective else "prompt_evaluated"
    p = med([r.get(pk, r["prompt_tokens"]) / r["prompt_s"] for r in rows if r["prompt_s"] > 0])
    d = med([r["decoded"] / r["decode_s"] for r in rows if r["decode_s"] > 0])
    return p, d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nexus-ai", required=True, help="path of the (release) nexus-ai binary")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--models-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reference-variant", required=True,
                    help="the ggml CPU variant llama-cpp-python was built for")
    ap.add_argument("--huge-pages", choices=["on", "off"], default="on",
                    help="weights in transparent huge pages on both sides (xtask sets the glibc tunable)")
    a = ap.parse_args()
    huge_pages = a.huge_pages == "on"

    # Same CPU kernels on both sides: our variant (nexus-ai info, as the contenders below will
    # load it: same environment) and llama-cpp-python's build must use the same instruction sets.
    info = json.loads(subprocess.run([a.nexus_ai, "info", "--json"], check=True, capture_output=True, text=True).stdout)
    ours = info["cpu_backend"]
    ref_info = llama_cpp.llama_print_system_info().decode()
    our_feats, ref_feats = cpu_features(ours["ggml_features"]), cpu_features(ref_info)
    print(f"CPU: {cpu_model()}")
    print(f"ggml CPU variant: ours {ours['variant']} ({'forced' if ours['forced'] else 'chosen for this CPU'}; "
          f"this CPU runs {', '.join(ours['supported'])}), llama.cpp reference built for {a.reference_variant}")
    print(f"  ours:      {' '.join(sorted(our_feats))}")
    print(f"  reference: {' '.join(sorted(ref_feats))}")
    if ours["variant"] != a.reference_variant or our_feats != ref_feats:
        raise SystemExit("FAIL: the two sides run different ggml CPU kernels; the comparison would not be fair")

    dp, pp = distinct_prompts(a.runs), prefix_prompts(a.runs)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    # Other jobs on the machine move every figure; say how busy it was.
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"model {a.gguf}\nthreads {a.threads}, {a.n} tokens per request, {a.runs} runs each (+1 warm-up), "
          "requests interleaved, medians\n", flush=True)
    print(f"starting llama.cpp direct (llama-cpp-python {llama_cpp.__version__}), engine direct (nexus-ai bench-engine), "
          "HTTP API (nexus-ai serve) ...", flush=True)
    contenders = {
        "llama": LlamaCpp(a.gguf, a.threads, huge_pages),
        "engine": Engine(a.nexus_ai, a.models_dir, a.model, a.threads, a.n),
        "api": Api(a.nexus_ai, a.models_dir, a.model, a.threads),
    }
    try:
        res = interleaved(contenders, dp, a.n, reset=True)
        # The weights are loaded and touched: check that both sides got the pages asked for.
        thp = {k: huge_page_kib(c.pid) / 1024 for k, c in contenders.items()}
        print(f"huge pages {a.huge_pages}: AnonHugePages MiB - llama.cpp {thp['llama']:.0f}, "
              f"engine {thp['engine']:.0f}, API {thp['api']:.0f}")
        # (Off is not checked: with THP "always" the kernel gives both sides huge pages alike.)
        if huge_pages and any(v < 16 for v in thp.values()):
            raise SystemExit("FAIL: not every side has its weights in huge pages; the comparison would not be fair")
        ll, en, api = res["llama"], res["engine"], res["api"]
        # Repeated prefix: llama.cpp keeps its cache between calls too (no reset).
        pre = interleaved({k: contenders[k] for k in ("llama", "api")}, pp, a.n, reset=False)
        ll_pre, api_pre = pre["llama"], pre["api"]
        print(f"greedy outputs: identical on every side for all {len(dp) + len(pp)} prompts")
    finally:
        contenders["engine"].stop()
        contenders["api"].stop()

    (llp, lld), (enp, end), (apip, apid) = rates(ll), rates(en), rates(api)
    if any(r["compute"] is None for r in en):
        raise SystemExit("nexus-ai bench-engine did not report llama_decode timings")
    enc_p, enc_d = rates([r["compute"] for r in en])
    reused = [r["prompt_tokens"] - r["prompt_evaluated"] for r in en]
    if any(reused):
        print(f"warning: the engine reused {reused} prompt tokens in the distinct-prompt case; prompt rates are inflated")
    print()
    # Two measures (docs/ai-api.md, "Benchmark"):
    #   llama_decode - llama.cpp's llama_perf_context counters: llama_decode time alone;
    #   loop         - our timers around the whole per-token loop (decode, argmax, detokenise,
    #                  stop-string check): what the API reports as eval_duration.
    # llama.cpp's row can only be had as llama_decode (llama-cpp-python's own loop is Python),
    # so the API ratio compares our loop with llama.cpp's bare decode: our side measures more.
    print(f"{'':40}{'prompt tok/s':>14}{'decode tok/s':>14}")
    print(f"{'llama.cpp direct        (llama_decode)':40}{llp:14.1f}{lld:14.1f}")
    print(f"{'nexus engine direct     (llama_decode)':40}{enc_p:14.1f}{enc_d:14.1f}")
    print(f"{'nexus engine direct     (loop)':40}{enp:14.1f}{end:14.1f}")
    print(f"{'nexus HTTP API          (loop, reported)':40}{apip:14.1f}{apid:14.1f}")
    print()
    print(f"HTTP API (loop) vs llama.cpp (llama_decode):  prompt {apip / llp:.3f}x   decode {apid / lld:.3f}x")
    print(f"engine (loop) vs llama.cpp (llama_decode):    prompt {enp / llp:.3f}x   decode {end / lld:.3f}x")
    print(f"engine vs llama.cpp, both llama_decode:       prompt {enc_p / llp:.3f}x   decode {enc_d / lld:.3f}x")
    print(f"engine loop time over its llama_decode time: prompt {enc_p / enp - 1:+.2%}   decode {enc_d / end - 1:+.2%}")

    # Overhead of the service + HTTP over the engine's own work, per request:
    # (client wall time - engine compute time reported for that request) / compute time.
    over = med([(r["wall_s"] - r["compute_s"]) / r["compute_s"] for r in api])
    wall_ratio = med([r["wall_s"] for r in api]) / med([r["wall_s"] for r in en])
    print(f"HTTP API overhead over the engine: {over * 100:.2f}% of request time (same request); "
          f"wall time API / engine direct: {wall_ratio:.3f}x")

    (llpe, _), (apipe, _) = rates(ll_pre, effective=True), rates(api_pre, effective=True)
    pre_tokens = med([r["prompt_tokens"] for r in api_pre])
    print()
    print(f"repeated prompt prefix ({pre_tokens:.0f}-token prompts sharing a system prompt), effective prompt tok/s "
          f"(prompt tokens / prompt time, cached tokens included):")
    print(f"  llama.cpp direct {llpe:.1f}   nexus HTTP API {apipe:.1f}   ratio {apipe / llpe:.3f}x")
    print(f"  KV-cache reuse speed-up over distinct prompts through the API: {apipe / apip:.1f}x")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
