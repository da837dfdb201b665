"""numpy-ref: exact attention in float64 from the mask ranges, forward and backward, on the CPU. The
reference worker: it exercises the whole protocol (inputs from attnbench's tensor file, outputs for the
gate, times, tracemalloc peak) with nothing but numpy."""

from ..helper import NumpyAdapter, Prepared, Unsupported


def dense_mask(group, seqlen):
    """bool [S, S] (True = attend) from the group's per-row key intervals."""
    import numpy as np

    lo, hi = (np.asarray(t)[:, :, None] for t in group.row_intervals(seqlen))
    j = np.arange(seqlen)[None, None, :]
    return ((j >= lo) & (j <= hi)).any(axis=0)


class NumpyReference(NumpyAdapter):
    name = "numpy-ref"
    summary = "exact float64 attention from the ranges with numpy, forward and backward (reference worker, CPU)"

    def prepare(self, case, x):
        import numpy as np

        if case.device != "cpu":
            raise Unsupported("numpy-ref runs on the CPU only")
        q, k, v, do = (np.asarray(a, dtype=np.float64) for a in (x.q, x.k, x.v, x.dout))
        masks = [dense_mask(g, case.seqlen) for g in case.mask.groups]
        per_kv = case.heads_q // case.heads_kv
        heads = [(h, h // per_kv, masks[case.group_of_head(h)]) for h in range(case.heads_q)]

        def probs(h, kv, m, lse=None):
            s = np.where(m, q[:, h] @ k[:, kv].transpose(0, 2, 1) * case.scale, -np.inf)
            if lse is None:
                mx = s.max(axis=-1, keepdims=True)
                mx = np.where(np.isfinite(mx), mx, 0.0)
                den = np.exp(s - mx).sum(axis=-1, keepdims=True)
                with np.errstate(divide="ignore"):
                    lse = (np.log(den) + mx)[..., 0]
            safe = np.where(np.isfinite(lse), lse, 0.0)[..., None]
            return np.where(m, np.exp(s - safe), 0.0), lse

        def forward():
            out, lse = np.zeros_like(q), np.full(q.shape[:3], -np.inf)
            for h, kv, m in heads:
                p, lse[:, h] = probs(h, kv, m)
                out[:, h] = p @ v[:, kv]
            return out, lse

        def backward(raw):
            out, lse = raw
            dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
            for h, kv, m in heads:
                p, _ = probs(h, kv, m, lse[:, h])
                dv[:, kv] += p.transpose(0, 2, 1) @ do[:, h]
                dp = do[:, h] @ v[:, kv].transpose(0, 2, 1)
                ds = p * (dp - (do[:, h] * out[:, h]).sum(axis=-1, keepdims=True))
                dq[:, h] = ds @ k[:, kv] * case.scale
                dk[:, kv] += ds.transpose(0, 2, 1) @ q[:, h] * case.scale
            return dq, dk, dv

        return Prepared(forward, backward=backward, note="numpy float64, dense mask per head group")
