"""flex: PyTorch FlexAttention. The ranges become per-row key intervals (at most R per row: 1 for
documents, 2 with a shared prefix), a mask_mod compares against them, create_block_mask builds the
BlockMask once per case (outside timing) and flex_attention runs torch.compile'd on CUDA. On the CPU it
runs uncompiled (the row's note says so): good for checking the mapping, not for timing."""

from ..helper import Prepared, TorchAdapter, Unsupported


class Flex(TorchAdapter):
    name = "flex"
    summary = "FlexAttention (torch.nn.attention.flex_attention): BlockMask from the ranges, compiled on CUDA"

    def prepare(self, case, x):
        import torch
        from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

        if case.device == "cpu" and case.backward:
            raise Unsupported("FlexAttention has no backward on the CPU")
        S, G = case.seqlen, len(case.mask.groups)
        tables = [g.row_intervals(S) for g in case.mask.groups]
        R = max(len(lo) for lo, _ in tables)
        pad = lambda rows, fill: rows + [[fill] * S] * (R - len(rows))  # noqa: E731
        lo = torch.tensor([pad(t[0], S) for t in tables], dtype=torch.int32, device=case.device)  # [G, R, S]
        hi = torch.tensor([pad(t[1], -1) for t in tables], dtype=torch.int32, device=case.device)
        per = case.heads_q // G

        def mask_mod(b, h, q_idx, kv_idx):
            g = h // per if G > 1 else 0
            ok = (lo[g, 0, q_idx] <= kv_idx) & (kv_idx <= hi[g, 0, q_idx])
            for r in range(1, R):
                ok = ok | ((lo[g, r, q_idx] <= kv_idx) & (kv_idx <= hi[g, r, q_idx]))
            return ok

        block_mask = create_block_mask(mask_mod, B=None, H=None if G == 1 else case.heads_q, Q_LEN=S, KV_LEN=S, device=case.device)
        compiled = case.device == "cuda"
        if compiled:
            # One compiled graph per shape; a sweep has many, and dynamo silently falls back to eager
            # past its cache limit.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 1024)
            torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit, 4096)
        fn = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention

        def forward():
            out, aux = fn(x.q, x.k, x.v, block_mask=block_mask, scale=case.scale, enable_gqa=case.heads_q != case.heads_kv, return_aux=AuxRequest(lse=True))
            return out, aux.lse

        how = "torch.compile'd" if compiled else "uncompiled (CPU)"
        return Prepared(forward, leaves=(x.q, x.k, x.v), dout=x.dout, note=f"flex_attention {how}, BlockMask {R} interval(s)/row, sparsity {block_mask.sparsity():.1f}%")
