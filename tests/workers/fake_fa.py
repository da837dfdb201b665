"""The fa2-varlen adapter over a stand-in for flash_attn.flash_attn_varlen_func written in torch from
FlashAttention's documented semantics (sequences by cu_seqlens, GQA, causal bottom-right aligned,
window_size (left, right) around i + Lk - Lq, -1 = unbounded, LSE [H, total_q] with +inf for rows that
attend nothing), so the adapter's packing, band detection and scatter of outputs, LSE and gradients run
through the real protocol and gate on the CPU. Not a kernel to time."""

import torch

from attnbench_worker import serve
from attnbench_worker.adapters.fa_varlen import Fa2Varlen


def varlen(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False, window_size=(-1, -1), return_attn_probs=False):
    outs, lses = [], []
    rep = q.shape[1] // k.shape[1]
    for s in range(len(cu_q) - 1):
        qs, ks = q[cu_q[s] : cu_q[s + 1]], k[cu_k[s] : cu_k[s + 1]].repeat_interleave(rep, 1)
        vs = v[cu_k[s] : cu_k[s + 1]].repeat_interleave(rep, 1)
        lq, lk = qs.shape[0], ks.shape[0]
        a, b = torch.arange(lq)[:, None], torch.arange(lk)[None, :]
        ok = torch.ones(lq, lk, dtype=torch.bool)
        if causal:
            ok &= b <= a + lk - lq
        left, right = window_size
        if left >= 0:
            ok &= b >= a + lk - lq - left
        if right >= 0:
            ok &= b <= a + lk - lq + right
        scores = torch.einsum("qhd,khd->hqk", qs.float(), ks.float()) * softmax_scale
        scores = scores.masked_fill(~ok, float("-inf"))
        lse = scores.logsumexp(-1)
        p = torch.exp(scores - lse.masked_fill(lse.isinf(), 0)[..., None])
        outs.append(torch.einsum("hqk,khd->qhd", p, vs.float()).to(q.dtype))
        lses.append(lse.masked_fill(lse.isneginf(), float("inf")))
    return torch.cat(outs), torch.cat(lses, 1), None


class FakeFa(Fa2Varlen):
    name = "fake-fa2-varlen"
    requires = ("torch",)

    def check_case(self, case):
        pass

    def kernel(self):
        return varlen


serve(FakeFa())
