"""magi-ffa: MagiAttention's flex_flash_attn_func (FFA), which takes the mask as ranges natively: our
slices are its (q_range, k_range, attn_type) triples with the same four kinds and the same alignment.
The batch is packed as B consecutive sequences of S tokens.

Released interfaces (magi_attention/functional/flex_flash_attn.py at each tag), all supported:
- v1.0.0-v1.0.3: (q, k, v, q_ranges, k_ranges, max_seqlen_q, max_seqlen_k, attn_type_map=None, ...)
  -> (out, lse) with lse (Hq, T) float32 (v1.0.3 flash_api.cpp: softmax_lse {num_heads_qo, total_q}).
- v1.0.4-v1.0.5: max_seqlen_q/k removed, (q, k, v, q_ranges, k_ranges, attn_type_map=None, [sink=None
  in v1.0.5], softmax_scale=None, ...) -> (out, lse) with lse (T, Hq) (`torch.full((q.size(0),
  q.size(1)), -inf)` in _flex_flash_attn_forward; the docstring still says (num_heads, num_tokens_q)).
- v1.1.x: everything after attn_type_map keyword-only (max_seqlen_q an optional keyword) and the
  return is (out, AttnForwardMeta) with the LSE in `meta.lse`, (T, Hq).
The signature is read once (inspect), every argument after q, k, v goes by keyword and only when the
installed function has it, and the LSE layout is read from its shape (T vs Hq; when T == Hq, from the
version the signature identifies)."""

import inspect

from ..helper import Prepared, TorchAdapter, Unsupported

KIND = {"full": 0, "causal": 1, "inv_causal": 2, "bi_causal": 3}


def lse_tokens_first(lse, tokens, heads, legacy):
    """Whether the FFA LSE is (T, Hq) (v1.0.4 on) rather than (Hq, T) (v1.0.0-v1.0.3)."""
    shape = tuple(lse.shape)
    if shape not in ((tokens, heads), (heads, tokens)):
        raise RuntimeError(f"flex_flash_attn_func returned an LSE of shape {shape}; expected ({tokens}, {heads}) or ({heads}, {tokens})")
    if tokens != heads:
        return shape == (tokens, heads)
    return not legacy


class MagiFfa(TorchAdapter):
    name = "magi-ffa"
    summary = "MagiAttention FFA (magi_attention.functional.flex_flash_attn_func, v1.0.0-v1.1.x): the ranges natively"
    requires = ("torch", "magi_attention")
    # FFA's own checks (flex_flash_fwd.hpp: "only supports Hopper GPUs or newer"; _flex_flash_attn_jit.py
    # v1.1.0: "head_dim must be <= 128 for now").
    limits = (r"only supports hopper", r"head_?dim", r"unsupported architecture")

    def kernel(self):
        from magi_attention.functional import flex_flash_attn_func

        return flex_flash_attn_func

    def check_case(self, case):
        """Device, architecture and dtype FFA takes (a stand-in kernel for tests may take others)."""
        if case.device != "cuda":
            raise Unsupported("FFA is a CUDA kernel")
        self.require_arch(case, 9, "FFA (Hopper kernels)")
        if case.dtype not in ("bf16", "fp16"):
            raise Unsupported(f"FFA takes bf16 or fp16, not {case.dtype}")

    def prepare(self, case, x):
        import torch

        self.check_case(case)
        if not case.mask.shared:
            raise Unsupported("heads with different masks need one call per head group")
        B, S, dev = case.batch, case.seqlen, case.device
        sl = [s for s in case.mask.groups[0].slices() if s[0][1] > s[0][0] and s[1][1] > s[1][0]]
        if not sl:
            raise Unsupported("the mask attends nothing")
        ranges = lambda i: torch.tensor([[b * S + s[i][0], b * S + s[i][1]] for b in range(B) for s in sl], dtype=torch.int32, device=dev)  # noqa: E731
        q_ranges, k_ranges = ranges(0), ranges(1)
        types = torch.tensor([KIND[s[2]] for _ in range(B) for s in sl], dtype=torch.int32, device=dev)
        qs = sorted(s[0] for s in sl)
        disjoint = all(a[1] <= b[0] for a, b in zip(qs, qs[1:]))
        max_q, max_k = max(s[0][1] - s[0][0] for s in sl), max(s[1][1] - s[1][0] for s in sl)
        flat = lambda t: t.detach().transpose(1, 2).reshape(B * S, t.shape[1], t.shape[3]).contiguous()  # noqa: E731
        q, k, v = (flat(t).requires_grad_(case.backward) for t in (x.q, x.k, x.v))
        dout = flat(x.dout)
        fn = self.kernel()
        params = inspect.signature(fn).parameters
        # v1.0.0-v1.0.3 take max_seqlen_q/k (positional-or-keyword, required); later versions do not
        # (v1.1 has an optional keyword-only max_seqlen_q).
        legacy = "max_seqlen_k" in params
        kw = dict(q_ranges=q_ranges, k_ranges=k_ranges, attn_type_map=types, softmax_scale=case.scale)
        if legacy:
            kw.update(max_seqlen_q=max_q, max_seqlen_k=max_k)
        elif "max_seqlen_q" in params:
            kw["max_seqlen_q"] = max_q
        if "disable_fwd_atomic_reduction" in params:
            kw["disable_fwd_atomic_reduction"] = disjoint

        def forward():
            return fn(q, k, v, **kw)

        std = lambda t, h: t.reshape(B, S, h, -1).transpose(1, 2)  # noqa: E731

        def outputs(raw):
            out, second = raw
            lse = getattr(second, "lse", second)  # v1.1: AttnForwardMeta; before: the tensor
            if lse is None:
                return std(out, case.heads_q), None
            lse = lse.float()
            if lse_tokens_first(lse, B * S, case.heads_q, legacy):
                lse = lse.transpose(0, 1)
            return std(out, case.heads_q), lse.reshape(case.heads_q, B, S).transpose(0, 1)

        def grads(g):
            return std(g[0], case.heads_q), std(g[1], case.heads_kv), std(g[2], case.heads_kv)

        api = "v1.0.0-v1.0.3 API (max_seqlen_q/k)" if legacy else "v1.0.4+ API (keywords)"
        return Prepared(forward, outputs=outputs, grads=grads, leaves=(q, k, v), dout=dout,
                        note=f"flex_flash_attn_func, {api}, {len(sl) * B} ranges{', disjoint q ranges (no atomic reduction)' if disjoint else ''}")
