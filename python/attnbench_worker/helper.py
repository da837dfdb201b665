"""The plumbing of attnbench's kernel-worker protocol (docs/EXTERNAL-KERNELS.md), so that an adapter only
maps the mask ranges to its kernel's arguments.

attnbench starts a worker, sends one JSON request per line on stdin and reads the answers from stdout:
lines that start with PREFIX are answers, anything else (a library printing) is ignored. attnbench owns
statistics, FLOPs, the correctness gate and the row; a worker builds the inputs, runs its kernel and
measures raw per-repeat times by the rules below.

An adapter subclasses TorchAdapter (inputs drawn from the seed exactly as attnbench draws them) or
NumpyAdapter (inputs read from the file attnbench writes) and implements `prepare(case, x)`, returning
a Prepared (the calls to time) or raising Unsupported(reason). `serve(adapter)` does the rest.

Timing rules (exactly attnbench's built-in clock, src/measure/clock.rs `CudaEventClock` driven by
src/measure/repeat.rs `run_repeats`): `warmup` untimed calls, then `repeats` timed calls. CUDA: with
timing_mode "l2flush" a 256 MiB buffer is zeroed before every call (warmup included), outside the
events; each repeat is timed by its own pair of CUDA events on the stream the kernel runs on. Flush,
events and calls are only enqueued: the host never synchronises between repeats (stream order alone
puts the flush before the start event), and the events are read after the last repeat (each end event
waited for, then `elapsed_time`). CPU: time.perf_counter around the synchronous call.
"""

import json
import math
import os
import struct
import sys
import time
import traceback

PROTOCOL = 1
PREFIX = "@@attnbench-ext "
L2_FLUSH_BYTES = 256 << 20
SAFETENSORS_DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32", "fp64": "F64"}


class Unsupported(Exception):
    """The adapter cannot take this case; the message is the reason (one line) shown in the row."""


# ----------------------------------------------------------------------------------------------------
# The case and its mask


class Group:
    """The mask of one head group: slices (q_range, k_range, kind), half-open token ranges. Kinds:
    full; causal (bottom-right aligned: b <= a + Lk - Lq); inv_causal (top-left: b >= a);
    bi_causal (both), with a = i - q_start, b = j - k_start."""

    def __init__(self, d):
        self.q_ranges = [tuple(r) for r in d["q_ranges"]]
        self.k_ranges = [tuple(r) for r in d["k_ranges"]]
        self.kinds = list(d["kinds"])

    def slices(self):
        return list(zip(self.q_ranges, self.k_ranges, self.kinds))

    def row_keys(self, s, a):
        """Inclusive (lo, hi) local key offsets that local row a of slice s attends, or None."""
        (qs, qe), (ks, ke), kind = s
        lq, lk = qe - qs, ke - ks
        if lk == 0 or a >= lq:
            return None
        lo, hi = {"full": (0, lk - 1), "causal": (0, min(a + lk - lq, lk - 1)), "inv_causal": (a, lk - 1),
                  "bi_causal": (a, min(a + lk - lq, lk - 1))}[kind]
        return None if hi < lo or hi < 0 else (max(lo, 0), hi)

    def row_intervals(self, seqlen):
        """Per query row, the attended keys as at most R inclusive global intervals: (lo, hi), two
        lists of R lists of `seqlen` ints; an unused interval has lo = seqlen, hi = -1. R is the largest
        number of slices covering one row (1 for documents, 2 for a shared prefix)."""
        per_row = [[] for _ in range(seqlen)]
        for s in self.slices():
            (qs, qe), (ks, _), _ = s
            for i in range(qs, qe):
                r = self.row_keys(s, i - qs)
                if r is not None:
                    per_row[i].append((ks + r[0], ks + r[1]))
        n = max([len(p) for p in per_row] + [1])
        lo = [[seqlen] * seqlen for _ in range(n)]
        hi = [[-1] * seqlen for _ in range(n)]
        for i, p in enumerate(per_row):
            for r, (a, b) in enumerate(sorted(p)):
                lo[r][i], hi[r][i] = a, b
        return lo, hi


class Mask:
    def __init__(self, d):
        self.seqlen_q = d["seqlen_q"]
        self.seqlen_k = d["seqlen_k"]
        self.groups = [Group(g) for g in d["groups"]]

    @property
    def shared(self):
        return len(self.groups) == 1


class Case:
    """One case: shapes, dtype ("bf16", "fp16", "fp32", "fp64"), pass ("fwd", "bwd", "fwdbwd"), device
    ("cpu", "cuda"), softmax scale, mask. Query head h uses mask group h // (heads_q // len(groups))."""

    def __init__(self, d):
        self.raw = d
        for key in ("batch", "heads_q", "heads_kv", "seqlen", "head_dim", "dtype", "device", "scale", "pattern"):
            setattr(self, key, d[key])
        self.pass_ = d["pass"]
        self.mask = Mask(d["mask"])

    @property
    def backward(self):
        return self.pass_ != "fwd"

    def group_of_head(self, h):
        return h // (self.heads_q // len(self.mask.groups))


class Prepared:
    """What an adapter hands back for one case.

    forward(): one timed forward call; returns the kernel's raw result.
    outputs(raw) -> (out [B, Hq, S, D], lse [B, Hq, S] natural log with -inf for rows that attend
        nothing, or None): the standard layout for the gate, untimed. Default: raw is (out, lse) or out.
    backward(raw) -> raw gradients: one timed backward call given a forward's raw result. Default
        (torch): autograd of <out, dout> with respect to `leaves`, keeping the graph so it can repeat.
    grads(raw_grads) -> (dq, dk, dv) in the standard layout, untimed. Default: identity.
    note: one line for the row (how the kernel was called)."""

    def __init__(self, forward, outputs=None, backward=None, grads=None, leaves=None, dout=None, note=""):
        self.forward = forward
        self.outputs = outputs or (lambda raw: raw if isinstance(raw, tuple) else (raw, None))
        self._backward = backward
        self.grads = grads or (lambda g: g)
        self.leaves = leaves
        self.dout = dout
        self.note = note

    def backward(self, raw):
        if self._backward is not None:
            return self._backward(raw)
        import torch

        out = raw[0] if isinstance(raw, tuple) else raw
        return torch.autograd.grad(out, self.leaves, self.dout, retain_graph=True)


class Inputs:
    """q [B, Hq, S, D], k and v [B, Hkv, S, D], dout like q: torch tensors on the case's device
    (TorchAdapter; q, k, v require grad when the pass has a backward) or numpy arrays (NumpyAdapter)."""

    def __init__(self, q, k, v, dout):
        self.q, self.k, self.v, self.dout = q, k, v, dout


# ----------------------------------------------------------------------------------------------------
# safetensors, by hand (no dependency): 8-byte little-endian header length, JSON header, raw data.


def write_safetensors(path, tensors):
    """tensors: [(name, dtype like "BF16", shape, bytes)]."""
    header, offset = {}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)
    os.replace(tmp, path)


def read_safetensors(path):
    """{name: (dtype, shape, bytes)}."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = (t["dtype"], t["shape"], blob[base + a : base + b])
    return out


# ----------------------------------------------------------------------------------------------------
# Adapters


class Adapter:
    """Subclass TorchAdapter or NumpyAdapter. `requires`: top-level modules whose absence makes the
    adapter unavailable (`unsupported: <module> not installed`)."""

    name = "adapter"
    summary = ""
    requires = ()
    inputs = "seed"
    # Regular expressions over an exception's text that mark a kernel's own limit (architecture, head
    # dim, dtype): such a failure is answered `unsupported: kernel limit: <message>`, not `error`.
    limits = ()

    def limit_reason(self, e):
        """The `unsupported` reason when exception `e` is one of the kernel's documented limits."""
        import re

        msg = f"{e}".strip().splitlines()[0] if f"{e}".strip() else type(e).__name__
        return f"kernel limit: {msg}" if any(re.search(p, msg, re.IGNORECASE) for p in self.limits) else None

    def availability(self):
        """(available, reason, version): cheap, without importing heavy packages."""
        import importlib.util

        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return False, f"{mod} not installed", ""
        return True, "", self.version()

    def version(self):
        from importlib import metadata

        parts = []
        for mod in self.requires:
            dist = {"flash_attn_interface": "flash_attn_3", "magi_attention": "magi_attention", "paddle": "paddlepaddle-gpu"}.get(mod, mod)
            try:
                parts.append(f"{mod} {metadata.version(dist)}")
            except Exception:
                parts.append(mod)
        return ", ".join(parts)

    def prepare(self, case, x):
        raise NotImplementedError


class TorchAdapter(Adapter):
    requires = ("torch",)
    inputs = "seed"

    def require_arch(self, case, major, what):
        """Unsupported unless the GPU's compute capability is at least `major`.0 (checked before any
        kernel call, so a missing architecture is `unsupported`, never `error`)."""
        import torch

        cc = torch.cuda.get_device_capability()
        if cc[0] < major:
            raise Unsupported(f"{what} needs compute capability {major}.0 or newer (this GPU is sm{cc[0]}{cc[1]})")

    def load_inputs(self, case, seed, path):
        """The seed contract: torch.manual_seed(seed), then q, k, v, dout drawn in that order by
        torch.randn in float32 on the case's device (CPU generator on the CPU, the GPU's Philox
        generator on CUDA), each cast to the case dtype."""
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}[case.dtype]
        torch.manual_seed(seed)
        shape = lambda h: (case.batch, h, case.seqlen, case.head_dim)  # noqa: E731
        mk = lambda h: torch.randn(shape(h), dtype=torch.float32, device=case.device).to(dtype)  # noqa: E731
        q, k, v, dout = mk(case.heads_q), mk(case.heads_kv), mk(case.heads_kv), mk(case.heads_q)
        if case.backward:
            for t in (q, k, v):
                t.requires_grad_(True)
        return Inputs(q, k, v, dout)

    def tensor_entry(self, name, t):
        t = t.detach().to("cpu").contiguous().clone()
        dtype = {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32", "torch.float64": "F64"}[str(t.dtype)]
        return (name, dtype, list(t.shape), bytes(t.untyped_storage()))

    def select_rows(self, t, rows):
        import torch

        return t if rows is None else t.index_select(2, torch.tensor(rows, device=t.device))

    def timing_stream(self, case):
        """The torch stream the kernel runs on, on which the flush and the events are enqueued (None:
        torch's current stream). An adapter whose kernel runs on another framework's stream returns it
        wrapped (torch.cuda.ExternalStream)."""
        return None

    def measure(self, case, call, warmup, repeats, timing_mode):
        import torch

        if case.device != "cuda":
            return _cpu_times(call, warmup, repeats), "cpu-perf-counter"
        flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda") if timing_mode == "l2flush" else None
        stream = self.timing_stream(case)
        if stream is None:
            times = cuda_event_times(torch.cuda, call, warmup, repeats, flush)
        else:
            with torch.cuda.stream(stream):
                times = cuda_event_times(torch.cuda, call, warmup, repeats, flush)
        return times, "cuda-event-l2flush" if flush is not None else "cuda-event-back2back"

    def peak_memory(self, case, call):
        """CUDA caching-allocator peak of one call above the bytes allocated before it."""
        import torch

        if case.device != "cuda":
            return None, "no allocator statistics on the CPU"
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        return max(torch.cuda.max_memory_allocated() - base, 0), "cuda-allocator"

    def release(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class NumpyAdapter(Adapter):
    """Inputs come from the tensor file attnbench writes (numpy cannot draw torch's normal numbers)."""

    requires = ("numpy",)
    inputs = "file"

    def load_inputs(self, case, seed, path):
        import numpy as np

        if path is None:
            raise RuntimeError("this worker reads its inputs from a file, but the request has no inputs_path")
        ts = read_safetensors(path)

        def arr(name):
            dtype, shape, data = ts[name]
            if dtype == "BF16":
                a = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(data, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])
            return a.reshape(shape)

        return Inputs(arr("q"), arr("k"), arr("v"), arr("dout"))

    def tensor_entry(self, name, a):
        import numpy as np

        a = np.ascontiguousarray(a, dtype="<f8")
        return (name, "F64", list(a.shape), a.tobytes())

    def select_rows(self, a, rows):
        return a if rows is None else a[:, :, rows]

    def measure(self, case, call, warmup, repeats, timing_mode):
        return _cpu_times(call, warmup, repeats), "cpu-perf-counter"

    def peak_memory(self, case, call):
        """tracemalloc's peak over one call (numpy reports its array buffers to tracemalloc)."""
        import tracemalloc

        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            call()
            return max(tracemalloc.get_traced_memory()[1] - base, 0), "tracemalloc"
        finally:
            tracemalloc.stop()

    def release(self):
        pass


def cuda_event_times(cuda, call, warmup, repeats, flush):
    """attnbench's CUDA-event rule (src/measure/clock.rs `CudaEventClock`, src/measure/repeat.rs
    `run_repeats`), with `cuda` = torch.cuda (tests pass a recording stand-in): per call, warmup
    included, the flush is enqueued (`zero_`, no synchronisation); each timed call sits between its own
    pair of events recorded on the current stream; nothing waits for the device until every repeat is
    enqueued; then each end event is waited for and `elapsed_time` read. Milliseconds per repeat."""
    for _ in range(warmup):
        if flush is not None:
            flush.zero_()
        call()
    pairs = []
    for _ in range(repeats):
        if flush is not None:
            flush.zero_()
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        pairs.append((start, end))
    times = []
    for start, end in pairs:
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return times


def _cpu_times(call, warmup, repeats):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return times


# ----------------------------------------------------------------------------------------------------
# The loop


ANSWERS = None  # the stream answers go to, once serve() runs


def answer(obj, out=None):
    out = out or ANSWERS or sys.stdout
    out.write(PREFIX + json.dumps(obj) + "\n")
    out.flush()


def _is_oom(e):
    msg = str(e).lower()
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in msg or isinstance(e, MemoryError)


class _State:
    """The prepared case, kept between `check` and `time` requests of the same id."""

    def __init__(self):
        self.key, self.case, self.x, self.prepared, self.fwd_for_bwd = None, None, None, None, None

    def drop(self, adapter):
        had = self.prepared is not None
        self.key = self.case = self.x = self.prepared = self.fwd_for_bwd = None
        if had:
            adapter.release()


def _prepare(adapter, state, req):
    key = req["id"]
    if state.key == key:
        return state
    state.drop(adapter)
    case = Case(req["case"])
    x = adapter.load_inputs(case, req["seed"], req.get("inputs_path"))
    state.case, state.x = case, x
    state.prepared = adapter.prepare(case, x)
    state.key = key
    return state


def _call_of(state):
    p, case = state.prepared, state.case
    if case.pass_ == "fwd":
        return lambda: p.forward()
    if case.pass_ == "bwd":
        # One forward outside the timed region; the backward repeats on it.
        if state.fwd_for_bwd is None:
            state.fwd_for_bwd = p.forward()
        raw = state.fwd_for_bwd
        return lambda: p.backward(raw)
    return lambda: p.backward(p.forward())


def handle(adapter, state, req):
    kind = req.get("type")
    rid = req.get("id")
    if kind == "hello":
        ok, reason, version = adapter.availability()
        return {"type": "hello", "protocol": PROTOCOL, "name": adapter.name, "version": version, "inputs": adapter.inputs,
                "available": ok, "reason": reason}
    if kind == "release":
        state.drop(adapter)
        return {"type": "done", "id": rid}
    ok, reason, _ = adapter.availability()
    if not ok:
        return {"type": "unsupported", "id": rid, "reason": reason}
    if kind == "inputs":
        state.drop(adapter)
        case = Case(req["case"])
        x = adapter.load_inputs(case, req["seed"], req.get("inputs_path"))
        adapter_write(adapter, req["path"], [("q", x.q), ("k", x.k), ("v", x.v), ("dout", x.dout)])
        return {"type": "done", "id": rid}
    if kind == "check":
        s = _prepare(adapter, state, req)
        p, case, rows = s.prepared, s.case, req.get("rows")
        raw = p.forward()
        out, lse = p.outputs(raw)
        ts = [("out", adapter.select_rows(out, rows))]
        if lse is not None:
            ts.append(("lse", adapter.select_rows(lse, rows)))
        if case.backward:
            dq, dk, dv = p.grads(p.backward(raw))
            ts.append(("dq", adapter.select_rows(dq, rows)))
            if rows is None:
                ts += [("dk", dk), ("dv", dv)]
        del raw
        adapter_write(adapter, req["path"], ts)
        return {"type": "done", "id": rid, "note": p.note}
    if kind == "time":
        s = _prepare(adapter, state, req)
        call = _call_of(s)
        peak, how = (None, "")
        if req.get("measure_memory", True):
            peak, how = adapter.peak_memory(s.case, call)
        times, clock = adapter.measure(s.case, call, req["warmup"], req["repeats"], req.get("timing_mode", "l2flush"))
        if any(not (isinstance(t, float) and math.isfinite(t)) for t in times):
            raise RuntimeError(f"non-finite time from the clock: {times}")
        return {"type": "times", "id": rid, "times_ms": times, "clock": clock, "peak_mem_bytes": peak, "memory": how,
                "note": s.prepared.note}
    return {"type": "error", "id": rid, "message": f"unknown request type {kind!r}"}


def adapter_write(adapter, path, named):
    write_safetensors(path, [adapter.tensor_entry(n, t) for n, t in named])


def serve(adapter, stdin=None, stdout=None):
    """Answers requests until stdin closes. An exception in the adapter becomes an `error` answer (or
    `unsupported` for Unsupported) and the worker goes on with the next request."""
    stdin = stdin or sys.stdin
    out = stdout
    if out is None:
        # Answers go to the original stdout; file descriptor 1 (print, and C libraries writing to it)
        # is pointed at stderr, so nothing else reaches attnbench's pipe.
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    global ANSWERS
    ANSWERS = out
    state = _State()
    for line in stdin:
        if not line.strip():
            continue
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            reply = handle(adapter, state, req)
        except Unsupported as e:
            state.drop(adapter)
            reply = {"type": "unsupported", "id": rid, "reason": str(e).splitlines()[0] if str(e) else "unsupported"}
        except Exception as e:  # noqa: BLE001 - every failure becomes an answer, the worker lives on
            state.drop(adapter)
            tb = traceback.format_exc().strip().splitlines()
            sys.stderr.write("\n".join(tb) + "\n")
            limit = None if _is_oom(e) else adapter.limit_reason(e)
            if limit is not None:
                reply = {"type": "unsupported", "id": rid, "reason": limit}
            else:
                reply = {"type": "error", "id": rid, "message": f"{type(e).__name__}: {e}".splitlines()[0], "oom": _is_oom(e)}
        answer(reply, out)
