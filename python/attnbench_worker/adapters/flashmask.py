"""flashmask: PaddlePaddle's flashmask_attention. FlashMask describes a mask by columns: for key j, the
masked rows [LTS, LTE) below and [UTS, UTE) above the diagonal. A column whose attended rows form one
interval [a, b) with a <= j < b is LTS = b, LTE = S, UTS = 0, UTE = a (documents, shared prefixes,
sliding windows, block-causal all are); other masks are unsupported. Tensors cross from torch to paddle
by DLPack (no copy); paddle runs on the default stream, which the CUDA events time."""

from ..helper import Prepared, TorchAdapter, Unsupported


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


class FlashMask(TorchAdapter):
    name = "flashmask"
    summary = "FlashMask (paddle.nn.functional.flashmask_attention): column-wise row intervals from the ranges"
    requires = ("torch", "paddle")

    def prepare(self, case, x):
        import paddle
        import torch
        from paddle.nn.functional import flashmask_attention

        if case.device != "cuda":
            raise Unsupported("FlashMask is a CUDA kernel")
        if case.dtype not in ("bf16", "fp16"):
            raise Unsupported(f"FlashMask takes bf16 or fp16, not {case.dtype}")
        if not case.mask.shared:
            raise Unsupported("heads with different masks: not mapped yet")
        S, B = case.seqlen, case.batch
        cols = column_rows(case.mask.groups[0], S)
        if cols is None or any(a != b and not (a <= j < b) for j, (a, b) in enumerate(cols)):
            raise Unsupported("some key column's attended rows are not one interval around the diagonal")
        se = [[b, S, 0, a] if a != b else [0, S, 0, S] for a, b in cols]  # LTS, LTE, UTS, UTE
        to_pd = lambda t: paddle.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(t))  # noqa: E731
        to_th = lambda t: torch.utils.dlpack.from_dlpack(paddle.utils.dlpack.to_dlpack(t))  # noqa: E731
        startend = to_pd(torch.tensor(se, dtype=torch.int32, device="cuda").reshape(1, 1, S, 4).expand(B, 1, S, 4).contiguous())
        q, k, v, dout = (to_pd(t.detach().transpose(1, 2).contiguous()) for t in (x.q, x.k, x.v, x.dout))  # [B, S, H, D]
        for t in (q, k, v):
            t.stop_gradient = not case.backward

        def forward():
            return flashmask_attention(q, k, v, startend_row_indices=startend, causal=False, return_softmax_lse=True)

        def backward(raw):
            return paddle.grad([raw[0]], [q, k, v], grad_outputs=[dout], retain_graph=True)

        def outputs(raw):
            return to_th(raw[0]).transpose(1, 2), to_th(raw[1]).float()

        def grads(g):
            return tuple(to_th(t).transpose(1, 2) for t in g)

        return Prepared(forward, outputs=outputs, backward=backward, grads=grads, note="flashmask_attention, startend_row_indices [B, 1, S, 4] (LTS, LTE, UTS, UTE)")
