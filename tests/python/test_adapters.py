"""The built-in adapters against stand-ins of each released interface of the libraries they call, and
the worker's clock against a recording torch.cuda. Run by tests/external.rs
(`python -m unittest discover -s tests/python`) with the CPU torch that launch/setup builds.

Each stand-in reproduces a released signature (parameter names, order, positional vs keyword-only) and
return convention (tuple vs object, LSE layout) of the real function, cited next to it, and computes
attention densely in torch from the arguments it is given, so an adapter that passes an argument to the
wrong parameter, or reads a result the wrong way, fails the comparison with the float64 reference."""

import contextlib
import inspect
import math
import sys
import types
import unittest

import torch

from attnbench_worker.adapters.fa_varlen import Fa2Varlen, Fa3Varlen
from attnbench_worker.adapters.flashmask import FlashMask
from attnbench_worker.adapters.flex import Flex, block_mask_builder
from attnbench_worker.adapters.magi_ffa import MagiFfa
from attnbench_worker.adapters.numpy_ref import dense_mask
from attnbench_worker.adapters.torch_sdpa import TorchSdpa
from attnbench_worker.helper import Case, TorchAdapter, Unsupported

INF = float("inf")


def make_case(slices, S, B=2, hq=4, hkv=2, D=16, dtype="fp32", pass_="fwd", device="cpu"):
    group = {"q_ranges": [s[0] for s in slices], "k_ranges": [s[1] for s in slices], "kinds": [s[2] for s in slices]}
    return Case({"batch": B, "heads_q": hq, "heads_kv": hkv, "seqlen": S, "head_dim": D, "dtype": dtype, "device": device,
                 "scale": 1 / math.sqrt(D), "pattern": "test", "pass": pass_,
                 "mask": {"seqlen_q": S, "seqlen_k": S, "groups": [group]}})


CAUSAL_DOC = [((0, 40), (0, 40), "causal"), ((40, 64), (40, 64), "causal")]
# A shared prefix (rows 16.. attend keys 0..16 and their own document causally) and a row range
# (48..64) that attends nothing.
SHARED = [((0, 16), (0, 16), "causal"), ((16, 48), (0, 16), "full"), ((16, 32), (16, 32), "causal"), ((32, 48), (32, 48), "causal")]
HALF_EMPTY = [((0, 32), (0, 32), "causal")]
WINDOW = [((0, 64), (0, 64), "bi_causal")]  # the diagonal only: a window (0, 0)
BLOCKS = [((0, 32), (0, 32), "full"), ((32, 64), (32, 64), "full")]


def reference(case, x):
    """float64 out [B, Hq, S, D] and LSE [B, Hq, S] (-inf on empty rows) from the dense mask."""
    m = torch.from_numpy(dense_mask(case.mask.groups[0], case.seqlen))
    rep = case.heads_q // case.heads_kv
    q, k, v = (t.double() for t in (x.q, x.k, x.v))
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = (q @ k.transpose(-1, -2) * case.scale).masked_fill(~m, -INF)
    lse = s.logsumexp(-1)
    p = torch.exp(s - lse.masked_fill(lse.isinf(), 0)[..., None])
    return p @ v, lse


def dense_packed(q, k, v, mask, scale):
    """Packed [T, H, D] attention with a [Tq, Tk] bool mask: out in q's dtype, LSE [H, Tq] float32."""
    rep = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = torch.einsum("qhd,khd->hqk", q.float(), kk.float()) * scale
    s = s.masked_fill(~mask, -INF)
    lse = s.logsumexp(-1)
    p = torch.exp(s - lse.masked_fill(lse.isinf(), 0)[..., None])
    return torch.einsum("hqk,khd->qhd", p, vv.float()).to(q.dtype), lse


class Checks(unittest.TestCase):
    def run_adapter(self, adapter, case, lse_expected=True, seed=7):
        x = adapter.load_inputs(case, seed, None)
        p = adapter.prepare(case, x)
        raw = p.forward()
        out, lse = p.outputs(raw)
        ref_out, ref_lse = reference(case, x)
        self.assertEqual(tuple(out.shape), tuple(ref_out.shape))
        self.assertLess((out.double() - ref_out).abs().max().item(), 1e-4)
        if lse_expected:
            self.assertIsNotNone(lse)
            self.assertEqual(tuple(lse.shape), tuple(ref_lse.shape))
            fin = ref_lse.isfinite()
            self.assertTrue(torch.equal(lse.isfinite(), fin), "finite/infinite rows differ")
            self.assertTrue(bool((lse[~fin] == -INF).all()), "rows that attend nothing must have LSE -inf")
            self.assertLess((lse.double()[fin] - ref_lse[fin]).abs().max().item(), 1e-4)
        else:
            self.assertIsNone(lse)
        if case.backward:
            dq, dk, dv = p.grads(p.backward(raw))
            q, k, v = (t.detach().double().requires_grad_() for t in (x.q, x.k, x.v))
            xo = types.SimpleNamespace(q=q, k=k, v=v)
            o, _ = reference(case, xo)
            want = torch.autograd.grad(o, (q, k, v), x.dout.double())
            for got, w in zip((dq, dk, dv), want):
                self.assertLess((got.double() - w).abs().max().item(), 1e-4)
        return p


# ----------------------------------------------------------------------------------------------------
# MagiAttention flex_flash_attn_func, magi_attention/functional/flex_flash_attn.py at each tag.


def ffa_dense(q, k, v, q_ranges, k_ranges, attn_type_map, softmax_scale):
    mask = torch.zeros(q.shape[0], k.shape[0], dtype=torch.bool)
    for (qs, qe), (ks, ke), t in zip(q_ranges.tolist(), k_ranges.tolist(), attn_type_map.tolist()):
        a, b = torch.arange(qe - qs)[:, None], torch.arange(ke - ks)[None, :]
        ok = torch.ones(qe - qs, ke - ks, dtype=torch.bool)
        if t in (1, 3):
            ok &= b <= a + (ke - ks) - (qe - qs)
        if t in (2, 3):
            ok &= b >= a
        mask[qs:qe, ks:ke] |= ok
    return dense_packed(q, k, v, mask, softmax_scale)


# v1.0.0: max_seqlen_q/k positional and required, return_dtype; returns (out, lse (num_heads, num_tokens_q)).
def ffa_v1_0_0(q, k, v, q_ranges, k_ranges, max_seqlen_q, max_seqlen_k, attn_type_map=None, softmax_scale=None, softcap=0.0,
               deterministic=False, sm_margin=0, return_dtype=None, disable_fwd_atomic_reduction=False):
    assert isinstance(max_seqlen_q, int) and isinstance(max_seqlen_k, int)
    return ffa_dense(q, k, v, q_ranges, k_ranges, attn_type_map, softmax_scale)


# v1.0.3: as v1.0.0 without return_dtype, with auto_range_merge; lse (num_heads, num_tokens_q)
# (flash_api.cpp: softmax_lse {num_heads_qo, total_q}).
def ffa_v1_0_3(q, k, v, q_ranges, k_ranges, max_seqlen_q, max_seqlen_k, attn_type_map=None, softmax_scale=None, softcap=0.0,
               deterministic=False, sm_margin=0, disable_fwd_atomic_reduction=False, auto_range_merge=False):
    assert isinstance(max_seqlen_q, int) and isinstance(max_seqlen_k, int)
    return ffa_dense(q, k, v, q_ranges, k_ranges, attn_type_map, softmax_scale)


# v1.0.4: max_seqlen_q/k gone; lse allocated (q.size(0), q.size(1)) = (T, Hq).
def ffa_v1_0_4(q, k, v, q_ranges, k_ranges, attn_type_map=None, softmax_scale=None, softcap=0.0, deterministic=False, sm_margin=0,
               disable_fwd_atomic_reduction=False, auto_range_merge=False, ref_block_size=None):
    out, lse = ffa_dense(q, k, v, q_ranges, k_ranges, attn_type_map, softmax_scale)
    return out, lse.t().contiguous()


# v1.0.5: `sink` after attn_type_map; lse (num_tokens_q, num_heads_q).
def ffa_v1_0_5(q, k, v, q_ranges, k_ranges, attn_type_map=None, sink=None, softmax_scale=None, softcap=0.0, deterministic=False,
               sm_margin=0, disable_fwd_atomic_reduction=False, auto_range_merge=False, ref_block_size=None):
    assert not isinstance(sink, int), "max_seqlen passed positionally into sink"
    out, lse = ffa_dense(q, k, v, q_ranges, k_ranges, attn_type_map, softmax_scale)
    return out, lse.t().contiguous()


class AttnForwardMeta:
    """magi_attention/common/forward_meta.py (v1.1.0): lse, max_logits."""

    def __init__(self, lse, max_logits):
        self.lse, self.max_logits = lse, max_logits


# v1.1.0/v1.1.1: keyword-only after attn_type_map, max_seqlen_q optional keyword, returns
# (out, AttnForwardMeta(lse (T, Hq), max_logits)).
def ffa_v1_1_0(q, k, v, q_ranges, k_ranges, attn_type_map=None, *, sink=None, sink_layout="sh", softmax_scale=None, softcap=0.0,
               deterministic=False, sm_margin=0, disable_fwd_atomic_reduction=False, disable_bwd_dkv_atomic_reduction=False,
               ref_block_size=None, max_seqlen_q=None, auto_range_merge=False, swap_ab=False, pack_gqa=False, cat_gqa=False,
               sparse_load=False, swap_bwd_qk_loop=False, return_max_logits=False):
    out, lse = ffa_dense(q, k, v, q_ranges, k_ranges, attn_type_map, softmax_scale)
    return out, AttnForwardMeta(lse=lse.t().contiguous(), max_logits=None)


class MagiTest(MagiFfa):
    def __init__(self, fn):
        self.fn = fn

    def kernel(self):
        return self.fn

    def check_case(self, case):
        pass


class MagiFfaTest(Checks):
    def test_every_released_signature(self):
        for fn in (ffa_v1_0_0, ffa_v1_0_3, ffa_v1_0_4, ffa_v1_0_5, ffa_v1_1_0):
            for slices in (CAUSAL_DOC, SHARED, HALF_EMPTY):
                with self.subTest(version=fn.__name__, mask=slices[0]):
                    self.run_adapter(MagiTest(fn), make_case(slices, 64))
            with self.subTest(version=fn.__name__, pass_="fwdbwd"):
                self.run_adapter(MagiTest(fn), make_case(CAUSAL_DOC, 64, pass_="fwdbwd"))

    def test_lse_layout_when_tokens_equal_heads(self):
        # T = B * S = 4 = Hq: the shape cannot tell, the signature's version does.
        for fn in (ffa_v1_0_3, ffa_v1_1_0):
            with self.subTest(version=fn.__name__):
                self.run_adapter(MagiTest(fn), make_case([((0, 4), (0, 4), "causal")], 4, B=1, hq=4, hkv=2))


# ----------------------------------------------------------------------------------------------------
# FlashAttention varlen.


def fa_dense(q, k, v, cu_q, cu_k, softmax_scale, causal, window_size):
    """FlashAttention's semantics: per sequence, causal bottom-right aligned, window (left, right)
    around i + Lk - Lq with a negative side unbounded; LSE [H, total_q], +inf on rows with no key."""
    mask = torch.zeros(q.shape[0], k.shape[0], dtype=torch.bool)
    for s in range(len(cu_q) - 1):
        qs, qe, ks, ke = int(cu_q[s]), int(cu_q[s + 1]), int(cu_k[s]), int(cu_k[s + 1])
        lq, lk = qe - qs, ke - ks
        a, b = torch.arange(lq)[:, None], torch.arange(lk)[None, :]
        ok = torch.ones(lq, lk, dtype=torch.bool)
        left, right = window_size
        if causal:
            right = 0
        if left >= 0:
            ok &= b >= a + lk - lq - left
        if right >= 0:
            ok &= b <= a + lk - lq + right
        mask[qs:qe, ks:ke] = ok
    out, lse = dense_packed(q, k, v, mask, softmax_scale)
    return out, lse.masked_fill(lse.isneginf(), INF)


class Recorded:
    """A callable with a released signature (`__signature__`, so inspect sees it) that records every
    attempted call, binding failures included."""

    def __init__(self, proto, body):
        self.__signature__ = inspect.signature(proto)
        self.body, self.calls = body, 0

    def __call__(self, *args, **kw):
        self.calls += 1
        bound = self.__signature__.bind(*args, **kw)
        bound.apply_defaults()
        return self.body(bound.arguments)


# flash_attn 2.8.x (flash_attn/flash_attn_interface.py): return_attn_probs -> (out, softmax_lse [H, T], S_dmask).
def fa2_v2_8(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None, causal=False,
             window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, block_table=None):
    pass


def fa2_body(a):
    out, lse = fa_dense(a["q"], a["k"], a["v"], a["cu_seqlens_q"], a["cu_seqlens_k"], a["softmax_scale"], a["causal"], a["window_size"])
    return (out, lse, None) if a["return_attn_probs"] else out


# hopper/flash_attn_interface.py, before ed209409 (2025-07-11, "[FA3] Don't return lse"): (out, lse).
def fa3_until_2025_07(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None, seqused_k=None,
                      softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None, v_descale=None, window_size=(-1, -1),
                      attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False, sm_margin=0):
    pass


# Same signature from ed209409 to 203b9b3d (2025-08-29): out only.
fa3_2025_07_to_08 = fa3_until_2025_07


# From 203b9b3d ("Allow returning LSE via kwarg") on: return_attn_probs=False -> out, True -> (out, lse).
def fa3_since_2025_08(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None, seqused_k=None,
                      softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None, v_descale=None, window_size=(-1, -1),
                      attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False, sm_margin=0,
                      return_attn_probs=False):
    pass


def fa3_body(convention):
    def body(a):
        out, lse = fa_dense(a["q"], a["k"], a["v"], a["cu_seqlens_q"], a["cu_seqlens_k"], a["softmax_scale"], a["causal"], a["window_size"])
        if convention == "tuple":
            return out, lse
        if convention == "out":
            return out
        return (out, lse) if a["return_attn_probs"] else out

    return body


def fa_test(base, fn):
    class T(base):
        def kernel(self):
            return fn

        def check_case(self, case):
            pass

    return T()


class FaVarlenTest(Checks):
    def test_fa2_v2_8(self):
        for slices in (CAUSAL_DOC, WINDOW):
            fn = Recorded(fa2_v2_8, fa2_body)
            self.run_adapter(fa_test(Fa2Varlen, fn), make_case(slices, 64, dtype="fp32"))
            self.assertEqual(fn.calls, 1)

    def test_fa3_every_return_convention_probed_once_outside_the_timed_call(self):
        for proto, conv, lse in ((fa3_until_2025_07, "tuple", True), (fa3_2025_07_to_08, "out", False), (fa3_since_2025_08, "kwarg", True)):
            with self.subTest(convention=conv):
                fn = Recorded(proto, fa3_body(conv))
                a = fa_test(Fa3Varlen, fn)
                case = make_case(CAUSAL_DOC, 64, pass_="fwdbwd")
                p = self.run_adapter(a, case, lse_expected=lse)
                self.assertEqual("no LSE" in p.note, not lse, p.note)
                before = fn.calls
                for _ in range(3):
                    p.forward()
                self.assertEqual(fn.calls - before, 3, "one kernel call per timed forward, no retry")

    def test_causal_pieces_with_fewer_keys_than_queries_are_unsupported(self):
        for kind in ("bi_causal", "inv_causal"):
            with self.subTest(kind=kind):
                fn = Recorded(fa2_v2_8, fa2_body)
                case = make_case([((0, 32), (0, 16), kind), ((32, 64), (16, 64), "full")], 64)
                a = fa_test(Fa2Varlen, fn)
                with self.assertRaisesRegex(Unsupported, "fewer keys"):
                    a.prepare(case, a.load_inputs(case, 1, None))
                self.assertEqual(fn.calls, 0)
        # Equal lengths (or more keys) are the window FlashAttention means.
        self.run_adapter(fa_test(Fa2Varlen, Recorded(fa2_v2_8, fa2_body)), make_case([((0, 32), (0, 48), "bi_causal"), ((32, 64), (16, 64), "bi_causal")], 64))


# ----------------------------------------------------------------------------------------------------
# FlexAttention.


class FlexOld:
    """torch 2.5-2.8 torch/nn/attention/flex_attention.py: no AuxRequest, `return_lse=True` -> (out, lse)."""

    def __init__(self):
        import torch.nn.attention.flex_attention as real

        self.create_block_mask, self.real, self.calls = real.create_block_mask, real.flex_attention, []

    def flex_attention(self, query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False, return_lse=False, kernel_options=None):
        self.calls.append(return_lse)
        return self.real(query, key, value, score_mod, block_mask, scale, enable_gqa, return_lse, kernel_options)


class FlexTest(Checks):
    def test_return_aux_on_this_torch(self):
        p = self.run_adapter(Flex(), make_case(SHARED, 64))
        self.assertIn("return_aux", p.note)

    def test_return_lse_before_torch_2_9(self):
        old = FlexOld()

        class T(Flex):
            def module(self):
                return old

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = self.run_adapter(T(), make_case(CAUSAL_DOC, 64))
        self.assertIn("return_lse", p.note)
        self.assertEqual(old.calls, [True])

    def test_block_mask_is_built_compiled_on_cuda(self):
        compiled = []
        fake_torch = types.SimpleNamespace(compile=lambda f: compiled.append(f) or ("compiled", f))

        def cbm():
            pass

        self.assertEqual(block_mask_builder(fake_torch, cbm, "cuda"), ("compiled", cbm))
        self.assertIs(block_mask_builder(fake_torch, cbm, "cpu"), cbm)
        self.assertEqual(compiled, [cbm])


# ----------------------------------------------------------------------------------------------------
# FlashMask: a stand-in `paddle` whose tensors are torch tensors (DLPack round trips are identities).


def flashmask_dense(query, key, value, startend_row_indices, causal, scale):
    """python/paddle/nn/functional/flash_attention.py semantics. [B, S, H, D] in; out [B, S, H, D], LSE
    [B, H, S rounded up to 128] with +inf on rows with no key (and in the padding)."""
    B, S, H, D = query.shape
    idx = startend_row_indices
    i = torch.arange(S)[:, None]
    j = torch.arange(S)[None, :]
    outs, lses = [], []
    for bb in range(B):
        col = idx[bb, 0]  # [S, n]
        lower, upper = i >= j, i < j
        if causal:
            lts = col[:, 0][None, :]
            lte = col[:, 1][None, :] if col.shape[1] == 2 else S
            masked = upper | (lower & (i >= lts) & (i < lte))
        else:
            if col.shape[1] == 2:
                lts, lte, uts, ute = col[:, 0][None, :], S, 0, col[:, 1][None, :]
            else:
                lts, lte, uts, ute = (col[:, c][None, :] for c in range(4))
            masked = (lower & (i >= lts) & (i < lte)) | (upper & (i >= uts) & (i < ute))
        o, lse = dense_packed(query[bb].float(), key[bb].float(), value[bb].float(), ~masked, scale)
        outs.append(o.to(query.dtype))
        pad = torch.full((H, -S % 128), INF)
        lses.append(torch.cat([lse.masked_fill(lse.isneginf(), INF), pad], 1))
    return [torch.stack(outs), torch.stack(lses)]


# The first releases: no softmax_scale, 4 columns with causal=False raise NotImplementedError.
def flashmask_first(query, key, value, startend_row_indices=None, *, dropout=0.0, causal=False, window_size=None,
                    return_softmax_lse=False, return_seed_offset=False, fixed_seed_offset=None, rng_name="", training=True, name=None):
    n = startend_row_indices.shape[-1]
    if causal and n not in (1, 2):
        raise ValueError("Invalid shape of startend_row_indices, when causal is True, the last dimension should be either 1 or 2")
    if not causal and n == 4:
        raise NotImplementedError("ending row index is not implemented yet.")
    out, lse = flashmask_dense(query, key, value, startend_row_indices, causal, query.shape[-1] ** -0.5)
    return [out, lse] if return_softmax_lse else out


# Later releases: softmax_scale, block_mask keywords; 4 columns implemented.
def flashmask_later(query, key, value, startend_row_indices=None, *, dropout=0.0, causal=False, window_size=None,
                    return_softmax_lse=False, return_seed_offset=False, fixed_seed_offset=None, rng_name="", training=True, name=None,
                    softmax_scale=None, block_mask=None):
    scale = query.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    out, lse = flashmask_dense(query, key, value, startend_row_indices, causal, scale)
    return [out, lse] if return_softmax_lse else out


def fake_paddle(fn):
    ident = types.SimpleNamespace(from_dlpack=torch.utils.dlpack.from_dlpack, to_dlpack=torch.utils.dlpack.to_dlpack)
    return types.SimpleNamespace(nn=types.SimpleNamespace(functional=types.SimpleNamespace(flashmask_attention=fn)),
                                 utils=types.SimpleNamespace(dlpack=ident))


class FlashMaskTest(Checks):
    def test_both_releases_causal_fast_path_and_two_columns(self):
        for fn in (flashmask_first, flashmask_later):
            for slices, causal in ((CAUSAL_DOC, True), (HALF_EMPTY, True), (SHARED, True), (WINDOW, True), (BLOCKS, False)):
                with self.subTest(release=fn.__name__, mask=slices[0]):
                    calls = []

                    def rec(*a, _fn=fn, **kw):
                        calls.append(kw)
                        return _fn(*a, **kw)

                    rec.__signature__ = inspect.signature(fn)
                    pd = fake_paddle(rec)

                    class T(FlashMask):
                        def paddle(self):
                            return pd

                        def check_case(self, case):
                            pass

                    p = self.run_adapter(T(), make_case(slices, 64))
                    self.assertEqual(calls[0]["causal"], causal)
                    self.assertEqual(calls[0]["startend_row_indices"].shape[-1], 1 if causal else 2)
                    self.assertEqual("softmax_scale" in calls[0], fn is flashmask_later, p.note)

    def test_peak_memory_is_paddles(self):
        log = []
        cuda = types.SimpleNamespace(synchronize=lambda: None, memory_allocated=lambda: 100, reset_max_memory_allocated=lambda: log.append("reset"),
                                     max_memory_allocated=lambda: 1124)
        pd = types.SimpleNamespace(device=types.SimpleNamespace(cuda=cuda))

        class T(FlashMask):
            def paddle(self):
                return pd

        peak, how = T().peak_memory(make_case(CAUSAL_DOC, 64, device="cuda"), lambda: log.append("call"))
        self.assertEqual((peak, how, log), (1024, "paddle-allocator", ["reset", "call"]))


# ----------------------------------------------------------------------------------------------------
# torch-sdpa


class TorchSdpaTest(Checks):
    def test_guard_counts_the_mask_as_built(self):
        per_head = {"q_ranges": [[0, 64]], "k_ranges": [[0, 64]], "kinds": ["causal"]}
        d = {"batch": 1, "heads_q": 64, "heads_kv": 8, "seqlen": 4096, "head_dim": 16, "dtype": "bf16", "device": "cpu", "scale": 0.25,
             "pattern": "t", "pass": "fwd", "mask": {"seqlen_q": 4096, "seqlen_k": 4096, "groups": [per_head, per_head]}}
        # 2 groups: [1, 64, 4096, 4096] bool + bf16 copy = 3 GiB, although 2 x 4096^2 is 32 MiB.
        with self.assertRaisesRegex(Unsupported, "3072 MiB"):
            TorchSdpa().prepare(Case(d), None)

    def test_outputs(self):
        self.run_adapter(TorchSdpa(), make_case(CAUSAL_DOC, 64), lse_expected=False)


# ----------------------------------------------------------------------------------------------------
# The worker's clock: attnbench's CUDA-event rule, checked on a recording torch.


class FakeTorch(types.ModuleType):
    """Just what TorchAdapter.measure touches: torch.empty (the flush buffer), torch.uint8, torch.cuda
    (Event, synchronize, stream), recording every call in order."""

    def __init__(self):
        super().__init__("torch")
        self.log, self.uint8 = [], "uint8"
        log, clock = self.log, [0.0]

        class Buffer:
            def zero_(self):
                log.append("flush")

        class Event:
            n = 0

            def __init__(self, enable_timing=False):
                assert enable_timing
                Event.n += 1
                self.id, self.t = Event.n, None

            def record(self, stream=None):
                clock[0] += 1.0
                self.t = clock[0]
                log.append("record")

            def synchronize(self):
                log.append("event-sync")

            def elapsed_time(self, end):
                log.append("elapsed")
                return end.t - self.t

        def synchronize(*a):
            log.append("device-sync")

        @contextlib.contextmanager
        def stream(s):
            log.append(f"stream {s}")
            yield

        self.empty = lambda n, dtype=None, device=None: Buffer()
        self.cuda = types.SimpleNamespace(Event=Event, synchronize=synchronize, stream=stream, current_stream=lambda: "current")


class ClockTest(unittest.TestCase):
    def measure(self, adapter, mode):
        fake = FakeTorch()
        real = sys.modules["torch"]
        sys.modules["torch"] = fake
        try:
            times, clock = adapter.measure(make_case(CAUSAL_DOC, 64, device="cuda"), lambda: fake.log.append("call"), 2, 3, mode)
        finally:
            sys.modules["torch"] = real
        return fake.log, times, clock

    def test_no_host_synchronisation_between_repeats(self):
        log, times, clock = self.measure(TorchAdapter(), "l2flush")
        self.assertEqual(clock, "cuda-event-l2flush")
        self.assertNotIn("device-sync", log)
        # warmup: flush, call (x2); repeats: flush, start, call, end (x3) all enqueued; then the events read.
        self.assertEqual(log, ["flush", "call"] * 2 + ["flush", "record", "call", "record"] * 3 + ["event-sync", "elapsed"] * 3)
        self.assertEqual(times, [1.0, 1.0, 1.0])
        log, _, clock = self.measure(TorchAdapter(), "back2back")
        self.assertEqual(clock, "cuda-event-back2back")
        self.assertEqual(log, ["call"] * 2 + ["record", "call", "record"] * 3 + ["event-sync", "elapsed"] * 3)

    def test_events_on_the_kernels_stream(self):
        class OnStream(TorchAdapter):
            def timing_stream(self, case):
                return "paddle-stream"

        log, _, _ = self.measure(OnStream(), "l2flush")
        self.assertEqual(log[0], "stream paddle-stream")
        self.assertNotIn("device-sync", log)


# ----------------------------------------------------------------------------------------------------
# Kernel limits


class LimitsTest(unittest.TestCase):
    def test_kernel_limit_messages_become_unsupported(self):
        from attnbench_worker.helper import serve

        class Limited(TorchAdapter):
            name = "limited"
            limits = (r"only supports hopper",)

            def prepare(self, case, x):
                msg = {64: "Flexible Flash Attention only supports Hopper GPUs or newer.", 32: "illegal memory access"}[case.seqlen]
                raise RuntimeError(msg)

        import io
        import json

        reqs = [{"type": "check", "id": str(S), "seed": 1, "path": "/nonexistent", "case": make_case([((0, S), (0, S), "causal")], S).raw}
                for S in (64, 32)]
        out = io.StringIO()
        serve(Limited(), stdin=io.StringIO("".join(json.dumps(r) + "\n" for r in reqs)), stdout=out)
        answers = [json.loads(line.split(" ", 1)[1]) for line in out.getvalue().splitlines()]
        self.assertEqual(answers[0]["type"], "unsupported")
        self.assertIn("kernel limit: Flexible Flash Attention only supports Hopper", answers[0]["reason"])
        self.assertEqual(answers[1]["type"], "error")


if __name__ == "__main__":
    unittest.main()
