#!/usr/bin/env python3
"""Timing fidelity: PyTorch's own timing of the same SDPA call attnbench times.

For each case, time torch.nn.functional.scaled_dot_product_attention with exactly one SDPA backend
enabled, the way attnbench times by default (on CUDA: a 256 MiB L2 flush outside the timed region, one
pair of CUDA events per repeat, median; on the CPU: time.perf_counter around each call, median), and
compare with `attnbench kernel --json` on the same device, same shape, same seed. Writes one JSON line
per case as soon as it is measured (a kill keeps what was done): attnbench ms, torch ms, ratio
(attnbench / torch; 1.0 = the two clocks agree).

  fidelity.py ATTNBENCH_BIN OUT.jsonl [--device cuda] [--seqlens 8192,16384] [--heads 64:8]
              [--head-dim 128] [--dtype bf16] [--backends sdpa-flash,sdpa-cudnn] [--masks full,causal]
              [--warmup 5] [--repeats 30] [--budget-s 60]

Cases run seqlen by seqlen (smallest first); past --budget-s no new case starts.
"""
import argparse
import json
import subprocess
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

SDP = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}


def torch_ms(a, backend, seqlen, causal):
    """Median ms of the SDPA call, inputs drawn as attnbench draws them (seed contract: f32 on the device, cast)."""
    hq, hkv = (int(h) for h in a.heads.split(":"))
    dev, dt = a.device, DTYPES[a.dtype]
    torch.manual_seed(a.seed)
    q, k, v = (torch.randn(1, h, seqlen, a.head_dim, dtype=torch.float32, device=dev).to(dt) for h in (hq, hkv, hkv))
    cuda = dev.startswith("cuda")
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=dev) if cuda else None
    times = []
    with sdpa_kernel([SDP[backend]]):
        for i in range(a.warmup + a.repeats):
            if cuda:
                flush.zero_()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                e.record()
                e.synchronize()
                ms = s.elapsed_time(e)
            else:
                t0 = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                ms = (time.perf_counter() - t0) * 1e3
            if i >= a.warmup:
                times.append(ms)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seqlens", default="8192,16384")
    p.add_argument("--heads", default="64:8")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--backends", default="sdpa-flash,sdpa-cudnn")
    p.add_argument("--masks", default="full,causal")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--budget-s", type=float, default=60.0)
    a = p.parse_args()
    started = time.monotonic()
    with open(a.out, "w") as f:
        for seqlen in (int(s) for s in a.seqlens.split(",")):
            for backend in a.backends.split(","):
                for mask in a.masks.split(","):
                    rec = {"backend": backend, "mask": mask, "seqlen": seqlen, "heads": a.heads, "head_dim": a.head_dim,
                           "dtype": a.dtype, "device": a.device, "warmup": a.warmup, "repeats": a.repeats}
                    if time.monotonic() - started > a.budget_s:
                        rec["skipped"] = f"budget of {a.budget_s:.0f} s spent"
                        f.write(json.dumps(rec) + "\n")
                        f.flush()
                        continue
                    try:
                        cmd = [a.binary, "kernel", "--backend", backend, "--mask", mask, "--seqlen", str(seqlen),
                               "--heads", a.heads, "--head-dim", str(a.head_dim), "--dtype", a.dtype, "--device", a.device,
                               "--warmup", str(a.warmup), "--repeats", str(a.repeats), "--seed", str(a.seed), "--no-check", "--json"]
                        if a.device.startswith("cuda"):
                            cmd += ["--timing-mode", "l2flush"]
                        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                        row = json.loads(proc.stdout)
                        rec["attnbench_ms"] = row.get("ms_median")
                        rec["attnbench_status"] = row.get("status")
                        rec["attnbench_timing_mode"] = row.get("timing_mode")
                        if row.get("error"):
                            rec["attnbench_error"] = row.get("error")
                    except Exception as e:  # a failed case is recorded, not fatal
                        rec["attnbench_error"] = str(e)[:300]
                    try:
                        rec["torch_ms"] = torch_ms(a, backend, seqlen, mask == "causal")
                        rec["torch_clock"] = "cuda-event-l2flush" if a.device.startswith("cuda") else "perf_counter"
                    except Exception as e:
                        rec["torch_error"] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                    if rec.get("attnbench_ms") and rec.get("torch_ms"):
                        rec["ratio"] = rec["attnbench_ms"] / rec["torch_ms"]
                    print(json.dumps(rec), flush=True)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()


if __name__ == "__main__":
    sys.exit(main())
