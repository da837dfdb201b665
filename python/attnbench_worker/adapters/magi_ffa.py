"""magi-ffa: MagiAttention's flex_flash_attn_func (FFA), which takes the mask as ranges natively: our
slices are its (q_range, k_range, attn_type) triples with the same four kinds and the same alignment.
The batch is packed as B consecutive sequences of S tokens."""

from ..helper import Prepared, TorchAdapter, Unsupported

KIND = {"full": 0, "causal": 1, "inv_causal": 2, "bi_causal": 3}


class MagiFfa(TorchAdapter):
    name = "magi-ffa"
    summary = "MagiAttention FFA (magi_attention.functional.flex_flash_attn_func): the ranges natively"
    requires = ("torch", "magi_attention")

    def prepare(self, case, x):
        import torch
        from magi_attention.functional import flex_flash_attn_func

        if case.device != "cuda":
            raise Unsupported("FFA is a CUDA kernel")
        if case.dtype not in ("bf16", "fp16"):
            raise Unsupported(f"FFA takes bf16 or fp16, not {case.dtype}")
        if not case.mask.shared:
            raise Unsupported("heads with different masks need one call per head group")
        B, S, dev = case.batch, case.seqlen, case.device
        sl = [s for s in case.mask.groups[0].slices() if s[0][1] > s[0][0] and s[1][1] > s[1][0]]
        ranges = lambda i: torch.tensor([[b * S + s[i][0], b * S + s[i][1]] for b in range(B) for s in sl], dtype=torch.int32, device=dev)  # noqa: E731
        q_ranges, k_ranges = ranges(0), ranges(1)
        types = torch.tensor([KIND[s[2]] for _ in range(B) for s in sl], dtype=torch.int32, device=dev)
        qs = sorted(s[0] for s in sl)
        disjoint = all(a[1] <= b[0] for a, b in zip(qs, qs[1:]))
        max_q, max_k = max(s[0][1] - s[0][0] for s in sl), max(s[1][1] - s[1][0] for s in sl)
        flat = lambda t: t.detach().transpose(1, 2).reshape(B * S, t.shape[1], t.shape[3]).contiguous()  # noqa: E731
        q, k, v = (flat(t).requires_grad_(case.backward) for t in (x.q, x.k, x.v))
        dout = flat(x.dout)

        def forward():
            return flex_flash_attn_func(q, k, v, q_ranges, k_ranges, max_q, max_k, attn_type_map=types, softmax_scale=case.scale,
                                        disable_fwd_atomic_reduction=disjoint)

        std = lambda t, h: t.reshape(B, S, h, -1).transpose(1, 2)  # noqa: E731

        def outputs(raw):
            out, lse = raw
            return std(out, case.heads_q), lse.float().reshape(case.heads_q, B, S).transpose(0, 1)

        def grads(g):
            return std(g[0], case.heads_q), std(g[1], case.heads_kv), std(g[2], case.heads_kv)

        return Prepared(forward, outputs=outputs, grads=grads, leaves=(q, k, v), dout=dout,
                        note=f"flex_flash_attn_func, {len(sl) * B} ranges{', disjoint q ranges (no atomic reduction)' if disjoint else ''}")
