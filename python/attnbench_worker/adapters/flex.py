"""flex: PyTorch FlexAttention. The ranges become per-row key intervals (at most R per row: 1 for
documents, 2 with a shared prefix), a mask_mod compares against them, create_block_mask builds the
BlockMask once per case (outside timing) and flex_attention runs torch.compile'd on CUDA. On the CPU it
runs uncompiled (the row's note says so): good for checking the mapping, not for timing.

torch/nn/attention/flex_attention.py, as released:
- create_block_mask eager evaluates mask_mod over the whole [B, H, Q_LEN, KV_LEN] (create_mask), tens of
  GB at 64K; compiled it works block by block. On CUDA it is `torch.compile(create_block_mask)` (what
  2.11 recommends in place of the deprecated `_compile=True`, and what `_compile=True` does there).
- torch >= 2.9: `return_aux=AuxRequest(lse=True)` -> (out, AuxOutput) with `.lse`; `return_lse` is
  deprecated. torch 2.5-2.8 have no AuxRequest: `return_lse=True` -> (out, lse). Probed by import."""

from ..helper import Prepared, TorchAdapter, Unsupported


def block_mask_builder(torch, create_block_mask, device):
    """create_block_mask compiled on CUDA (block by block, never the dense [B, H, S, S] mask); eager on
    the CPU, where the test sizes are small and compiling would need a C++ toolchain."""
    return torch.compile(create_block_mask) if device == "cuda" else create_block_mask


class Flex(TorchAdapter):
    name = "flex"
    summary = "FlexAttention (torch.nn.attention.flex_attention): BlockMask from the ranges, compiled on CUDA"

    def prepare(self, case, x):
        import torch

        fa = self.module()
        create_block_mask, flex_attention = fa.create_block_mask, fa.flex_attention
        aux = getattr(fa, "AuxRequest", None)

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

        compiled = case.device == "cuda"
        build = block_mask_builder(torch, create_block_mask, case.device)
        block_mask = build(mask_mod, None, None if G == 1 else case.heads_q, S, S, case.device)
        if compiled:
            # One compiled graph per shape; a sweep has many, and dynamo silently falls back to eager
            # past its cache limit.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 1024)
            torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit, 4096)
        fn = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention

        gqa = case.heads_q != case.heads_kv
        if aux is not None:
            request = aux(lse=True)

            def forward():
                out, a = fn(x.q, x.k, x.v, block_mask=block_mask, scale=case.scale, enable_gqa=gqa, return_aux=request)
                return out, a.lse
        else:
            def forward():
                return tuple(fn(x.q, x.k, x.v, block_mask=block_mask, scale=case.scale, enable_gqa=gqa, return_lse=True))

        how = "torch.compile'd, BlockMask by compiled create_block_mask" if compiled else "uncompiled (CPU)"
        lse = "return_aux" if aux is not None else "return_lse (torch < 2.9)"
        return Prepared(forward, leaves=(x.q, x.k, x.v), dout=x.dout,
                        note=f"flex_attention {how}, LSE by {lse}, BlockMask {R} interval(s)/row, sparsity {block_mask.sparsity():.1f}%")

    def module(self):
        """torch.nn.attention.flex_attention (tests substitute stand-ins of older releases)."""
        import torch.nn.attention.flex_attention as fa

        return fa
