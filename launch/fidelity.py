#!/usr/bin/env python3
"""Timing fidelity: PyTorch's own timing of the same SDPA call attnbench times.

For each case, time torch.nn.functional.scaled_dot_product_attention with exactly one SDPA backend
enabled, with the same method attnbench uses by default (256 MiB L2 flush outside the timed region,
one pair of CUDA events per repeat, median), and compare with `attnbench kernel --json` run on the same
GPU. Writes one JSON line per case: attnbench ms, torch ms, ratio. Usage:
  fidelity.py ATTNBENCH_BIN OUT.jsonl
"""
import json
import subprocess
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

CASES = [
    # (attnbench backend, SDPBackend, mask, seqlen, is_causal)
    ("sdpa-flash", SDPBackend.FLASH_ATTENTION, "full", 16384, False),
    ("sdpa-flash", SDPBackend.FLASH_ATTENTION, "causal", 16384, True),
    ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION, "full", 16384, False),
    ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION, "causal", 16384, True),
    ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION, "causal", 8192, True),
]
HQ, HKV, D, WARMUP, REPEATS = 64, 8, 128, 5, 30


def torch_ms(sdp, seqlen, causal):
    g = torch.Generator(device="cpu").manual_seed(42)
    q = torch.randn(1, HQ, seqlen, D, generator=g).to("cuda", torch.bfloat16)
    k = torch.randn(1, HKV, seqlen, D, generator=g).to("cuda", torch.bfloat16)
    v = torch.randn(1, HKV, seqlen, D, generator=g).to("cuda", torch.bfloat16)
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    times = []
    with sdpa_kernel([sdp]):
        for i in range(WARMUP + REPEATS):
            flush.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            e.record()
            e.synchronize()
            if i >= WARMUP:
                times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def main():
    binary, out = sys.argv[1], sys.argv[2]
    with open(out, "w") as f:
        for backend, sdp, mask, seqlen, causal in CASES:
            rec = {"backend": backend, "mask": mask, "seqlen": seqlen, "heads": f"{HQ}:{HKV}", "head_dim": D, "dtype": "bf16"}
            try:
                p = subprocess.run([binary, "kernel", "--backend", backend, "--mask", mask, "--seqlen", str(seqlen),
                                    "--heads", f"{HQ}:{HKV}", "--head-dim", str(D), "--dtype", "bf16", "--device", "cuda",
                                    "--warmup", str(WARMUP), "--repeats", str(REPEATS), "--no-check", "--json"],
                                   capture_output=True, text=True, timeout=120)
                row = json.loads(p.stdout)
                rec["attnbench_ms"] = row.get("ms_median")
                rec["attnbench_status"] = row.get("status")
                rec["attnbench_note"] = row.get("note")
            except Exception as e:  # a failed case is recorded, not fatal
                rec["attnbench_error"] = str(e)
            try:
                rec["torch_ms"] = torch_ms(sdp, seqlen, causal)
            except Exception as e:
                rec["torch_error"] = str(e)
            if rec.get("attnbench_ms") and rec.get("torch_ms"):
                rec["ratio"] = rec["attnbench_ms"] / rec["torch_ms"]
            print(json.dumps(rec), flush=True)
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
