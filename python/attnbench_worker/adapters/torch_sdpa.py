"""torch-sdpa: torch's scaled_dot_product_attention with a dense boolean mask built from the ranges.
The example adapter of docs/EXTERNAL-KERNELS.md, and a torch worker that runs on the CPU, so the seed
contract is tested end to end (the gate compares it against attnbench's own inputs). The mask is built
once in prepare, outside the timed call; SDPA's own bool-to-additive conversion inside each call is
what attnbench's built-in sdpa backends do too (src/backend/sdpa.rs passes the same dense bool mask),
so the two time the same work."""

from ..helper import Prepared, TorchAdapter, Unsupported


class TorchSdpa(TorchAdapter):
    name = "torch-sdpa"
    summary = "torch SDPA with a dense boolean mask from the ranges (example adapter; CPU and CUDA)"

    def prepare(self, case, x):
        import torch
        import torch.nn.functional as F

        S, G = case.seqlen, len(case.mask.groups)
        # What is really allocated: the bool mask as built ([S, S], or [1, Hq, S, S] repeated per query
        # head when heads have different masks), and the additive mask in the inputs' dtype SDPA
        # derives from it on every call (convert_boolean_attn_mask), the same shape.
        elems = S * S * (1 if G == 1 else case.heads_q)
        nbytes = elems * (1 + {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8}[case.dtype])
        if nbytes > 1 << 31:
            raise Unsupported(f"the dense mask and its additive copy would take {nbytes >> 20} MiB")
        j = torch.arange(S, device=case.device)
        dense = []
        for g in case.mask.groups:
            lo, hi = (torch.tensor(t, device=case.device)[:, :, None] for t in g.row_intervals(S))
            m = ((j >= lo) & (j <= hi)).any(0)  # [S, S], True = attend
            if not bool(m.any(1).all()):
                raise Unsupported("a query row attends no key (SDPA returns NaN there)")
            dense.append(m)
        per = case.heads_q // len(dense)
        mask = dense[0] if len(dense) == 1 else torch.stack(dense).repeat_interleave(per, 0)[None]

        def forward():
            return F.scaled_dot_product_attention(x.q, x.k, x.v, attn_mask=mask, scale=case.scale, enable_gqa=case.heads_q != case.heads_kv)

        return Prepared(forward, leaves=(x.q, x.k, x.v), dout=x.dout, note=f"F.scaled_dot_product_attention, dense bool mask {len(dense)}x{S}x{S}")
