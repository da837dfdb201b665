"""flashmask: PaddlePaddle's flashmask_attention. FlashMask describes a mask by key columns
(`startend_row_indices` [B, 1 or H, S_k, {1, 2, 4}] int32, python/paddle/nn/functional/flash_attention.py):
with causal=True (the upper triangle masked by the kernel), 1 column LTS masks the rows >= LTS below the
diagonal, 2 columns [LTS, LTE) mask those rows; with causal=False, 2 columns mask the rows >= LTS below
and < UTE above the diagonal, 4 columns [LTS, LTE) below and [UTS, UTE) above (4 columns raise
NotImplementedError in the first releases). A column whose attended rows are one interval [a, b) with
a <= j < b is therefore:
- causal=True, 1 column LTS = b, when every column's interval starts on the diagonal (a = j): causal
  documents, causal masks — the documented fast path; a column that attends nothing has LTS = j;
- causal=False, 2 columns (LTS, UTE) = (b, a) otherwise (shared prefixes, sliding windows, blocks); a
  column that attends nothing has (0, S).
Other masks are unsupported.

What comes back is a list [out, softmax_lse]; the LSE is [B, H, S rounded up to 128] (the FA2-based
kernel pads the rows) with +inf on rows that attend nothing: sliced to S, +inf -> -inf. `softmax_scale`
is passed where the installed function takes it (it did not at first: 1/sqrt(d) built in, our scale).

Tensors cross from torch to paddle by DLPack (no copy). Paddle launches on its own stream: the CUDA
events and the L2 flush are enqueued on that stream (wrapped as a torch ExternalStream). Paddle's
outputs come from Paddle's allocator, so the peak is Paddle's (`paddle-allocator`), not torch's."""

import inspect

from ..helper import Prepared, TorchAdapter, Unsupported

PADDLE_ALLOCATOR = "paddle-allocator"


def column_rows(group, S):
    """Per key column, the attended rows as one half-open interval (a, b), (0, 0) when none; None when
    some column needs more than one interval."""
    cols = [[] for _ in range(S)]
    for (qs, qe), (ks, ke), kind in group.slices():
        lq, d = qe - qs, (ke - ks) - (qe - qs)
        for b in range(ke - ks):
            lo = max(0, b - d) if kind in ("causal", "bi_causal") else 0
            hi = min(b, lq - 1) + 1 if kind in ("inv_causal", "bi_causal") else lq
            if lo < hi:
                cols[ks + b].append((qs + lo, qs + hi))
    out = []
    for c in cols:
        merged = []
        for a, b in sorted(c):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        if len(merged) > 1:
            return None
        out.append(merged[0] if merged else (0, 0))
    return out


def startend(cols, S):
    """(causal, rows of startend_row_indices) for the column intervals, or None when some non-empty
    column's interval does not contain the diagonal."""
    if any(a != b and not (a <= j < b) for j, (a, b) in enumerate(cols)):
        return None
    if all(a == b or a == j for j, (a, b) in enumerate(cols)):
        return True, [[b] if a != b else [j] for j, (a, b) in enumerate(cols)]
    return False, [[b, a] if a != b else [0, S] for a, b in cols]


class FlashMask(TorchAdapter):
    name = "flashmask"
    summary = "FlashMask (paddle.nn.functional.flashmask_attention): column-wise row intervals from the ranges"
    requires = ("torch", "paddle")
    # Paddle's flash-attention checks: architecture, head dim, dtype.
    limits = (r"only supports? (ampere|hopper)", r"head ?dim", r"head_?size", r"sm8x|sm90", r"only supports? fp16")

    def paddle(self):
        import paddle

        return paddle

    def check_case(self, case):
        if case.device != "cuda":
            raise Unsupported("FlashMask is a CUDA kernel")
        self.require_arch(case, 8, "FlashMask")
        if case.dtype not in ("bf16", "fp16"):
            raise Unsupported(f"FlashMask takes bf16 or fp16, not {case.dtype}")

    def prepare(self, case, x):
        import torch

        paddle = self.paddle()
        flashmask_attention = paddle.nn.functional.flashmask_attention
        self.check_case(case)
        if not case.mask.shared:
            raise Unsupported("heads with different masks: not mapped yet")
        S, B = case.seqlen, case.batch
        cols = column_rows(case.mask.groups[0], S)
        se = None if cols is None else startend(cols, S)
        if se is None:
            raise Unsupported("some key column's attended rows are not one interval around the diagonal")
        causal, rows = se
        to_pd = lambda t: paddle.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(t))  # noqa: E731
        to_th = lambda t: torch.utils.dlpack.from_dlpack(paddle.utils.dlpack.to_dlpack(t))  # noqa: E731
        n = len(rows[0])
        indices = to_pd(torch.tensor(rows, dtype=torch.int32, device=case.device).reshape(1, 1, S, n).expand(B, 1, S, n).contiguous())
        q, k, v, dout = (to_pd(t.detach().transpose(1, 2).contiguous()) for t in (x.q, x.k, x.v, x.dout))  # [B, S, H, D]
        for t in (q, k, v):
            t.stop_gradient = not case.backward
        if case.device == "cuda":
            # The inputs were made on torch's stream; Paddle reads them on its own (once, untimed).
            torch.cuda.synchronize()
        kw = dict(startend_row_indices=indices, causal=causal, return_softmax_lse=True)
        scaled = "softmax_scale" in inspect.signature(flashmask_attention).parameters
        if scaled:
            kw["softmax_scale"] = case.scale

        def forward():
            return flashmask_attention(q, k, v, **kw)

        def backward(raw):
            return paddle.grad([raw[0]], [q, k, v], grad_outputs=[dout], retain_graph=True)

        def outputs(raw):
            out = to_th(raw[0]).transpose(1, 2)
            lse = to_th(raw[1]).float()[..., :S]  # [B, H, S rounded up to 128] -> [B, H, S]
            return out, torch.where(torch.isposinf(lse), float("-inf"), lse)

        def grads(g):
            return tuple(to_th(t).transpose(1, 2) for t in g)

        how = "causal=True, 1 column (LTS)" if causal else "causal=False, 2 columns (LTS, UTE)"
        scale = "softmax_scale passed" if scaled else "no softmax_scale argument (1/sqrt(d) built in)"
        return Prepared(forward, outputs=outputs, backward=backward, grads=grads,
                        note=f"flashmask_attention, startend_row_indices [B, 1, S, {n}], {how}, {scale}")

    def timing_stream(self, case):
        """Paddle's current CUDA stream as a torch stream, so flush and events go where the kernel runs."""
        import torch

        raw = self.paddle().device.current_stream().cuda_stream
        return torch.cuda.ExternalStream(raw)

    def peak_memory(self, case, call):
        """Paddle's allocator peak of one call above what it had allocated before (its outputs and
        workspace come from Paddle's allocator, not torch's)."""
        if case.device != "cuda":
            return None, "no allocator statistics on the CPU"
        cuda = self.paddle().device.cuda
        if not hasattr(cuda, "reset_max_memory_allocated"):
            return None, "this Paddle has no paddle.device.cuda.reset_max_memory_allocated"
        cuda.synchronize()
        base = cuda.memory_allocated()
        cuda.reset_max_memory_allocated()
        call()
        cuda.synchronize()
        return max(cuda.max_memory_allocated() - base, 0), PADDLE_ALLOCATOR

    def release(self):
        super().release()
        cuda = self.paddle().device.cuda
        if hasattr(cuda, "empty_cache"):
            cuda.empty_cache()
