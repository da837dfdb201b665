"""fa2-varlen / fa3-varlen: FlashAttention 2 (`flash_attn`) and 3 (`flash_attn_interface`) varlen, one
call per case. A mask that is one band i - left <= j <= i + right over the whole sequence (full, causal,
sliding windows) is one sequence per batch element with that window. Otherwise the sequences are the
mask's slices: each slice's query rows and key rows are gathered into the packed layout (outside timing).
FlashAttention applies one (causal, window) to every sequence of a call, so the slices must have
disjoint query ranges and share one of: full, causal (bottom-right aligned, as ours), or the window that
expresses bi_causal (left = Lk - Lq, right = 0) or inv_causal (left = Lk - Lq, right = unbounded).
FlashAttention's window is j in [i + Lk - Lq - left, i + Lk - Lq + right] with a negative side meaning
unbounded (flash_api.cpp: `if (window_size_left < 0 && window_size_right >= 0) window_size_left =
seqlen_k`), so a bi_causal or inv_causal slice with fewer keys than queries (left = Lk - Lq < 0) would
silently become causal or full: such slices are `unsupported`.

Return conventions, read once per process (never inside the timed call):
- flash_attn 2.8.x (flash_attn/flash_attn_interface.py): return_attn_probs=True -> (out, lse [H, T],
  S_dmask); lse +inf on rows that attend nothing.
- FA3 (hopper/flash_attn_interface.py): before 2025-07-11 (ed209409) -> (out, lse); from ed209409 to
  2025-08-29 (203b9b3d) -> out only, no way to get the LSE; from 203b9b3d on, return_attn_probs=False
  keyword -> out, or (out, lse) when True. The keyword is probed with inspect; without it, one untimed
  call in prepare tells (out, lse) from out."""

from ..helper import Prepared, TorchAdapter, Unsupported


def window_of(slice_):
    (qs, qe), (ks, ke), kind = slice_
    d = (ke - ks) - (qe - qs)
    if d < 0 and kind in ("bi_causal", "inv_causal"):
        raise Unsupported(f"a {kind} slice with fewer keys ({ke - ks}) than queries ({qe - qs}) needs window left = {d} < 0, "
                          "which FlashAttention reads as unbounded (another mask)")
    return {"full": (False, (-1, -1)), "causal": (True, (-1, -1)), "bi_causal": (False, (d, 0)), "inv_causal": (False, (d, -1))}[kind]


def band_of(group, S):
    """(causal, window) when the group is exactly the band i - left <= j <= i + right on [0, S)."""
    lo, hi = group.row_intervals(S)
    if len(lo) != 1 or any(a > b for a, b in zip(lo[0], hi[0])):
        return None
    left = max(i - a for i, a in enumerate(lo[0]))
    right = max(b - i for i, b in enumerate(hi[0]))
    if left < 0 or right < 0 or any(a != max(0, i - left) or b != min(S - 1, i + right) for i, (a, b) in enumerate(zip(lo[0], hi[0]))):
        return None
    left, right = (-1 if left >= S - 1 else left), (-1 if right >= S - 1 else right)
    return (True, (-1, -1)) if (left, right) == (-1, 0) else (False, (left, right))


class FaVarlen(TorchAdapter):
    module = "flash_attn"
    label = "FA2"

    def kernel(self):
        import importlib

        return importlib.import_module(self.module).flash_attn_varlen_func

    # flash_api.cpp's own checks (2.8.3 and hopper): "only supports Ampere GPUs or newer", "head
    # dimension at most 256", "head_size that is a multiple of 8", "only support(s) fp16 and bf16".
    limits = (r"only supports? (ampere|hopper)", r"head ?dimension", r"head_?size", r"only supports? fp16")

    def check_case(self, case):
        """Device, architecture, dtype and head dim the kernel takes (a stand-in kernel for tests may
        take others)."""
        if case.device != "cuda":
            raise Unsupported(f"{self.label} is a CUDA kernel")
        self.require_arch(case, 8, self.label)
        if case.dtype not in ("bf16", "fp16"):
            raise Unsupported(f"{self.label} takes bf16 or fp16, not {case.dtype}")
        if case.head_dim > 256:
            raise Unsupported(f"{self.label} takes head dims up to 256, not {case.head_dim}")

    def lse_call(self, fn, args, kw):
        """(extra keywords, whether the result carries the LSE) for this installed kernel, found once
        per process: FA2 always takes return_attn_probs."""
        return {"return_attn_probs": True}, True

    def prepare(self, case, x):
        import torch

        self.check_case(case)
        if not case.mask.shared:
            raise Unsupported("heads with different masks need one call per head group")
        B, S, dev = case.batch, case.seqlen, case.device
        band = band_of(case.mask.groups[0], S)
        if band is not None:
            sl, (causal, window) = [((0, S), (0, S), "band")], band
        else:
            sl = sorted((s for s in case.mask.groups[0].slices() if s[0][1] > s[0][0] and s[1][1] > s[1][0]), key=lambda s: s[0])
            if any(a[0][1] > b[0][0] for a, b in zip(sl, sl[1:])):
                raise Unsupported("some query rows attend several slices (a shared prefix): one varlen call cannot express it")
            windows = {window_of(s) for s in sl}
            if len(windows) != 1:
                raise Unsupported(f"the slices need {len(windows)} different (causal, window) settings; one varlen call takes one")
            causal, window = windows.pop()
        qi = torch.cat([torch.arange(b * S + s[0][0], b * S + s[0][1]) for b in range(B) for s in sl]).to(dev)
        ki = torch.cat([torch.arange(b * S + s[1][0], b * S + s[1][1]) for b in range(B) for s in sl]).to(dev)
        cu = lambda i: torch.tensor([0] + [n for b in range(B) for s in sl for n in [s[i][1] - s[i][0]]], device=dev).cumsum(0).to(torch.int32)  # noqa: E731
        cu_q, cu_k = cu(0), cu(1)
        max_q, max_k = max(s[0][1] - s[0][0] for s in sl), max(s[1][1] - s[1][0] for s in sl)
        flat = lambda t: t.detach().transpose(1, 2).reshape(B * S, t.shape[1], t.shape[3])  # noqa: E731  [B*S, H, D]
        q, k, v = (flat(t)[i].contiguous().requires_grad_(case.backward) for t, i in ((x.q, qi), (x.k, ki), (x.v, ki)))
        dout = flat(x.dout)[qi].contiguous()
        fn = self.kernel()
        args = (q, k, v, cu_q, cu_k, max_q, max_k)
        kw = dict(softmax_scale=case.scale, causal=causal, window_size=window)
        extra, has_lse = self.lse_call(fn, args, kw)
        kw.update(extra)

        if has_lse:
            def forward():
                return fn(*args, **kw)
        else:
            def forward():
                return (fn(*args, **kw),)

        def unpack(t, idx, heads):  # packed [T, H, D] -> [B, H, S, D], summing duplicated rows
            full = torch.zeros(B * S, heads, t.shape[-1], dtype=t.dtype, device=dev).index_add_(0, idx, t)
            return full.reshape(B, S, heads, -1).transpose(1, 2)

        def outputs(raw):
            out = unpack(raw[0], qi, case.heads_q)
            lse = None
            if len(raw) > 1 and raw[1] is not None and raw[1].dim() == 2:  # [H, T]
                full = torch.full((case.heads_q, B * S), float("-inf"), device=dev)
                full[:, qi] = raw[1].float()
                lse = full.reshape(case.heads_q, B, S).transpose(0, 1)
                lse = torch.where(torch.isposinf(lse), float("-inf"), lse)  # FA marks empty rows +inf
            return out, lse

        def grads(g):
            return unpack(g[0], qi, case.heads_q), unpack(g[1], ki, case.heads_kv), unpack(g[2], ki, case.heads_kv)

        what = "full" if window == (-1, -1) and not causal else "causal" if causal else f"window {window}"
        no_lse = "" if has_lse else "; this build returns no LSE: gated on the output alone"
        return Prepared(forward, outputs=outputs, grads=grads, leaves=(q, k, v), dout=dout,
                        note=f"{self.module}.flash_attn_varlen_func, {len(sl) * B} sequences, {what}{no_lse}")


class Fa2Varlen(FaVarlen):
    name = "fa2-varlen"
    summary = "FlashAttention 2 varlen (flash_attn): one call, slices as sequences, windows where the mask allows"
    requires = ("torch", "flash_attn")


class Fa3Varlen(FaVarlen):
    name = "fa3-varlen"
    module = "flash_attn_interface"
    label = "FA3"
    summary = "FlashAttention 3 varlen (flash_attn_interface, Hopper): one call, slices as sequences, windows where the mask allows"
    requires = ("torch", "flash_attn_interface")
    _convention = None  # (extra keywords, returns LSE), probed once per process (per adapter instance)

    def lse_call(self, fn, args, kw):
        import inspect

        if self._convention is None:
            if "return_attn_probs" in inspect.signature(fn).parameters:
                self._convention = ({"return_attn_probs": True}, True)
            else:
                # One untimed call: builds before 2025-07-11 return (out, lse), later ones out alone.
                self._convention = ({}, isinstance(fn(*args, **kw), tuple))
        return self._convention
