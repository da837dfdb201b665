"""torch-sdpa: torch's scaled_dot_product_attention with a dense boolean mask built from the ranges.
The example adapter of docs/EXTERNAL-KERNELS.md, and a torch worker that runs on the CPU, so the seed
contract is tested end to end (the gate compares it against attnbench's own inputs)."""

from ..helper import Prepared, TorchAdapter, Unsupported


class TorchSdpa(TorchAdapter):
    name = "torch-sdpa"
    summary = "torch SDPA with a dense boolean mask from the ranges (example adapter; CPU and CUDA)"

    def prepare(self, case, x):
        import torch
        import torch.nn.functional as F

        S = case.seqlen
        if S * S * len(case.mask.groups) > 1 << 31:
            raise Unsupported(f"the dense mask would take {S * S * len(case.mask.groups) >> 20} MiB")
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
