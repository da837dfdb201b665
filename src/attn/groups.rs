//! Slice grouping and packing: how a range mask becomes kernel launches. Slices go into *groups*
//! (one slice kind per group, pairwise disjoint query ranges), and each group becomes one packed varlen
//! call ([`PackedCall`]): one *sequence* per (batch element, slice), gathered into the kernels'
//! `[total, H, D]` layout with cumulative offsets. FlashAttention can also run a whole mask in ONE call
//! when it is a native sliding window over documents ([`window_form`]).
//!
//! Each sequence pairs a query range with a key range and a kind the kernels know natively:
//! - `Full` → no mask; `Causal` → `is_causal` (FlashAttention-2 and cuDNN align causal bottom-right, like
//!   our model; the efficient kernel gets `custom_mask_type = 2`, its bottom-right causal);
//! - `InvCausal` (b ≥ a) → causal on *reversed* query rows and keys: with a′ = Lq−1−a, b′ = Lk−1−b,
//!   b ≥ a ⇔ b′ ≤ a′ + (Lk − Lq), exactly bottom-right causal — the gather indices are simply reversed;
//! - `BiCausal` (a ≤ b ≤ a + Lk − Lq) → sliding window (left = Lk − Lq, right = 0), so a group of
//!   bi_causal slices must share Lk − Lq (see [`group_slices`]).

use super::KernelError;
use crate::mask::{Mask, Slice, SliceKind};

/// One kernel launch of the sliced backend: slices of a single kind (and, for bi_causal, a single
/// window) whose query ranges are pairwise disjoint, so a varlen kernel can pack them as sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub kind: SliceKind,
    pub slices: Vec<Slice>,
}

/// Greedy interval colouring per kind: slices sorted by query start go to the first group of their kind
/// (and bi_causal window `Lk − Lq`) whose last query range ends at or before their start. Optimal for
/// interval graphs, so the number of launches is the maximum number of same-kind slices over any row.
pub fn group_slices(mask: &Mask) -> Vec<Group> {
    let mut slices: Vec<&Slice> = mask.slices().iter().collect();
    slices.sort_by_key(|s| (s.kind, s.q.start, s.k.start));
    let mut groups: Vec<(Group, usize, i64)> = Vec::new(); // (group, last q end, window key)
    for s in slices {
        let wkey = if s.kind == SliceKind::BiCausal { s.k_len() as i64 - s.q_len() as i64 } else { 0 };
        match groups.iter_mut().find(|(g, end, w)| g.kind == s.kind && *w == wkey && *end <= s.q.start) {
            Some((g, end, _)) => {
                g.slices.push(s.clone());
                *end = s.q.end;
            }
            None => groups.push((Group { kind: s.kind, slices: vec![s.clone()] }, s.q.end, wkey)),
        }
    }
    groups.into_iter().map(|(g, _, _)| g).collect()
}

/// One packed varlen call: gather indices into the flattened `[B·S, H, D]` rows, offsets, and the mask
/// mode.
#[derive(Debug)]
pub struct PackedCall {
    pub q_idx: Vec<i64>,
    pub k_idx: Vec<i64>,
    pub cu_q: Vec<i32>,
    pub cu_k: Vec<i32>,
    pub max_q: i64,
    pub max_k: i64,
    /// Bottom-right causal after the reversal of inv_causal sequences.
    pub causal: bool,
    /// Sliding window (left, right) in FlashAttention's bottom-right convention; `None` = unbounded.
    pub window: (Option<i64>, Option<i64>),
}

impl PackedCall {
    /// The plan for one group (one kind, disjoint query ranges) over `batch` elements of length `sq`/`sk`.
    pub fn for_group(g: &Group, batch: usize, sq: usize, sk: usize) -> PackedCall {
        let reverse = g.kind == SliceKind::InvCausal;
        let (mut q_idx, mut k_idx, mut cu_q, mut cu_k) = (vec![], vec![], vec![0i32], vec![0i32]);
        let (mut max_q, mut max_k) = (0, 0);
        for b in 0..batch {
            for s in &g.slices {
                let qs: Vec<i64> = s.q.clone().map(|i| (b * sq + i) as i64).collect();
                let ks: Vec<i64> = s.k.clone().map(|j| (b * sk + j) as i64).collect();
                if reverse {
                    q_idx.extend(qs.iter().rev());
                    k_idx.extend(ks.iter().rev());
                } else {
                    q_idx.extend(qs);
                    k_idx.extend(ks);
                }
                cu_q.push(q_idx.len() as i32);
                cu_k.push(k_idx.len() as i32);
                max_q = max_q.max(s.q_len() as i64);
                max_k = max_k.max(s.k_len() as i64);
            }
        }
        let (causal, window) = match g.kind {
            SliceKind::Full => (false, (None, None)),
            SliceKind::Causal | SliceKind::InvCausal => (true, (None, Some(0))),
            SliceKind::BiCausal => {
                let s = &g.slices[0];
                (true, (Some(s.k_len() as i64 - s.q_len() as i64), Some(0)))
            }
        };
        PackedCall { q_idx, k_idx, cu_q, cu_k, max_q, max_k, causal, window }
    }

    /// The mask one packed sequence `n` sees, in its own (packed) coordinates: what the kernel computes.
    pub fn sequence_slice(&self, n: usize) -> Slice {
        let lq = (self.cu_q[n + 1] - self.cu_q[n]) as usize;
        let lk = (self.cu_k[n + 1] - self.cu_k[n]) as usize;
        let kind = match (self.causal, self.window.0) {
            (false, _) => SliceKind::Full,
            (true, None) => SliceKind::Causal,
            (true, Some(_)) => SliceKind::BiCausal,
        };
        Slice::new(0..lq, 0..lk, kind)
    }

    pub fn sequences(&self) -> usize {
        self.cu_q.len() - 1
    }

    /// One call over square documents `docs` (in order, covering their rows) with FlashAttention's
    /// native sliding window: query i of a document attends keys j of the same document with
    /// i − left ≤ j ≤ i + right (`None` = unbounded on that side). `right = Some(0)` is causal.
    pub fn windowed(w: &WindowForm, batch: usize, seqlen: usize) -> PackedCall {
        let (mut q_idx, mut cu_q) = (vec![], vec![0i32]);
        let mut max = 0;
        for b in 0..batch {
            for d in &w.docs {
                q_idx.extend(d.clone().map(|i| (b * seqlen + i) as i64));
                cu_q.push(q_idx.len() as i32);
                max = max.max(d.len() as i64);
            }
        }
        let causal = w.right == Some(0);
        PackedCall { k_idx: q_idx.clone(), q_idx, cu_k: cu_q.clone(), cu_q, max_q: max, max_k: max, causal, window: (w.left, w.right) }
    }

    /// The exact mask the kernel applies to packed sequence `n`, in its own coordinates (what the CPU
    /// emulation computes): bottom-right causal alignment and the (left, right) window.
    pub fn sequence_mask(&self, n: usize) -> Result<Mask, KernelError> {
        let lq = (self.cu_q[n + 1] - self.cu_q[n]) as usize;
        let lk = (self.cu_k[n + 1] - self.cu_k[n]) as usize;
        let invalid = |e: crate::mask::MaskError| KernelError::Invalid(e.to_string());
        let (left, right) = (self.window.0, if self.causal { Some(0) } else { self.window.1 });
        if left.is_none() && (right.is_none() || right == Some(0)) {
            // Full or plain causal: the single-kind slice says it exactly.
            return Mask::rect(lq, lk, vec![self.sequence_slice(n)]).map_err(invalid);
        }
        // Allowed keys: i + shift − L ≤ j ≤ i + shift + R (shift = lk − lq, bottom-right alignment).
        // In widened coordinates w = j − (shift − L) that is i ≤ w ≤ i + L + R: one bi-causal slice over
        // [0, lq) × [0, lq + L + R), clipped to the real keys and shifted back.
        let big = (lq + lk) as i64;
        let (l, r) = (left.unwrap_or(big).max(0), right.unwrap_or(big).max(0));
        let c = (lk as i64 - lq as i64) - l; // j = w + c
        let width = lq as i64 + l + r;
        let (w0, w1) = ((-c).max(0), (lk as i64 - c).min(width));
        let mut slices = Vec::new();
        if w0 < w1 {
            let band = Slice::new(0..lq, 0..width as usize, SliceKind::BiCausal);
            for p in crate::mask::clip_slice(&band, 0..lq, w0 as usize..w1 as usize) {
                slices.push(Slice::new(p.q.clone(), (p.k.start as i64 + c) as usize..(p.k.end as i64 + c) as usize, p.kind));
            }
        }
        Mask::rect(lq, lk, slices).map_err(invalid)
    }
}

/// A mask FlashAttention's varlen kernel runs in ONE call with its native sliding window: square
/// documents covering the sequence in order, and in each, query i attends keys j of its document with
/// i − left ≤ j ≤ i + right (`None` = unbounded). Covers full / causal document masks, sliding_window,
/// sliding_window_causal (and windows inside documents) — what LongCA-bench's FA2-varlen baseline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowForm {
    pub docs: Vec<std::ops::Range<usize>>,
    pub left: Option<i64>,
    pub right: Option<i64>,
}

/// Recognises a [`WindowForm`] exactly: per-row attended keys must be one interval containing the
/// diagonal; the window sizes are the largest reach left and right; documents start where a row's
/// interval starts at the row itself (and end where it ends there); then every row is re-derived from
/// (documents, left, right) and compared. `None` unless the mask is exactly that shape.
pub fn window_form(mask: &Mask) -> Option<WindowForm> {
    let s = mask.seqlen_q;
    if mask.seqlen_k != s {
        return None;
    }
    let (mut lo, mut hi, mut count) = (vec![usize::MAX; s], vec![0usize; s], vec![0u64; s]);
    for sl in mask.slices() {
        for i in sl.nonempty_rows() {
            let (a, b) = sl.row_keys(i - sl.q.start)?;
            lo[i] = lo[i].min(sl.k.start + a);
            hi[i] = hi[i].max(sl.k.start + b);
            count[i] += (b - a + 1) as u64;
        }
    }
    let (mut wl, mut wr) = (0usize, 0usize);
    for i in 0..s {
        if count[i] == 0 || count[i] != (hi[i] - lo[i] + 1) as u64 || lo[i] > i || hi[i] < i {
            return None;
        }
        wl = wl.max(i - lo[i]);
        wr = wr.max(hi[i] - i);
    }
    let mut starts = vec![0usize];
    for i in 1..s {
        if (wl > 0 && lo[i] == i) || (wr > 0 && hi[i - 1] == i - 1) {
            starts.push(i);
        }
    }
    let docs: Vec<std::ops::Range<usize>> = starts.iter().zip(starts.iter().skip(1).chain(std::iter::once(&s))).map(|(&a, &b)| a..b).collect();
    for d in &docs {
        for i in d.clone() {
            if lo[i] != d.start.max(i.saturating_sub(wl)) || hi[i] != (d.end - 1).min(i + wr) {
                return None;
            }
        }
    }
    let longest = docs.iter().map(|d| d.len()).max().unwrap_or(1);
    let side = |w: usize| if w + 1 >= longest { None } else { Some(w as i64) };
    let (left, right) = (side(wl), if wr == 0 { Some(0) } else { side(wr) });
    Some(WindowForm { docs, left, right })
}

/// The packed calls of a mask: one per slice group — or, for FlashAttention, a single call when the
/// whole mask is one native window ([`window_form`]: sliding windows, documents).
pub fn packed_calls(mask: &Mask, batch: usize, flash: bool) -> Vec<PackedCall> {
    if flash {
        if let Some(w) = window_form(mask) {
            return vec![PackedCall::windowed(&w, batch, mask.seqlen_q)];
        }
    }
    calls_for_groups(&group_slices(mask), mask, batch)
}

/// One packed call per group.
pub fn calls_for_groups(groups: &[Group], mask: &Mask, batch: usize) -> Vec<PackedCall> {
    groups.iter().map(|g| PackedCall::for_group(g, batch, mask.seqlen_q, mask.seqlen_k)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{mask_all_kinds, random_mask, zoo};
    use super::*;

    #[test]
    fn groups_have_one_kind_and_disjoint_rows() {
        for seed in 0..20 {
            let m = random_mask(50, 40, seed);
            let groups = group_slices(&m);
            let n: usize = groups.iter().map(|g| g.slices.len()).sum();
            assert_eq!(n, m.slices().len());
            for g in &groups {
                assert!(g.slices.iter().all(|s| s.kind == g.kind));
                for w in g.slices.windows(2) {
                    assert!(w[0].q.end <= w[1].q.start, "{:?}", g);
                }
            }
        }
    }

    #[test]
    fn packed_calls_reverse_inv_causal_and_windows_bi_causal() {
        let m = mask_all_kinds();
        for g in group_slices(&m) {
            let p = PackedCall::for_group(&g, 1, 40, 44);
            assert_eq!(p.sequences(), g.slices.len());
            match g.kind {
                SliceKind::InvCausal => assert!(p.causal && p.q_idx[0] == g.slices[0].q.end as i64 - 1),
                SliceKind::BiCausal => assert_eq!(p.window.0, Some(g.slices[0].k_len() as i64 - g.slices[0].q_len() as i64)),
                SliceKind::Full => assert!(!p.causal),
                SliceKind::Causal => assert!(p.causal && p.window.0.is_none()),
            }
        }
    }

    #[test]
    fn window_form_recognises_exactly_the_one_call_masks() {
        let s = 97;
        let docs = [("doc_lens", "30,1,40,26")];
        let yes = [
            zoo("full", s, &[]),
            zoo("causal", s, &[]),
            zoo("sliding_window", s, &[("window_left", "7"), ("window_right", "3")]),
            zoo("sliding_window", s, &[("window_left", "0"), ("window_right", "5")]),
            zoo("sliding_window", s, &[("window_left", "200"), ("window_right", "4")]),
            zoo("sliding_window_causal", s, &[("window", "9")]),
            zoo("causal_document", s, &docs),
            zoo("full_document", s, &docs),
        ];
        for m in &yes {
            let w = window_form(m).unwrap_or_else(|| panic!("not recognised: {:?}", m.slices()));
            // Rebuild the mask the kernel would apply from (documents, window) and compare exactly.
            let call = PackedCall::windowed(&w, 1, s);
            let mut dense = vec![false; s * s];
            for (n, d) in w.docs.iter().enumerate() {
                let seq = call.sequence_mask(n).unwrap().to_dense();
                for (i, row) in d.clone().enumerate() {
                    for (j, col) in d.clone().enumerate() {
                        dense[row * s + col] = seq[i * d.len() + j];
                    }
                }
            }
            assert_eq!(dense, m.to_dense(), "{w:?}");
        }
        assert_eq!(window_form(&zoo("sliding_window_causal", s, &[("window", "9")])).unwrap().right, Some(0));
        assert_eq!(window_form(&zoo("causal_document", s, &docs)).unwrap().docs.len(), 4);
        for (name, kv) in [
            ("share_question", &docs[..]),
            ("prefix_lm_causal", &[][..]),
            ("causal_blockwise", &docs[..]),
            ("global_sliding_window", &[("global", "4"), ("window", "8")][..]),
        ] {
            assert!(window_form(&zoo(name, s, kv)).is_none(), "{name} is not one window call");
        }
    }
}
