//! The range mask model: a mask is a list of non-overlapping slices `(q_range, k_range, kind)`, the
//! representation LongCA-bench and MagiAttention (FFA) use. Everything else — exact area, density,
//! block sparsity, a dense boolean tensor, pictures, FLOPs, CP sharding — derives from it.
//!
//! Semantics of one slice with `Lq = q_end − q_start`, `Lk = k_end − k_start`, `a = i − q_start`,
//! `b = j − k_start` (query i, key j, both global indices):
//! - `Full`: every (a, b);
//! - `Causal`: bottom-right aligned, `b ≤ a + (Lk − Lq)` (a square slice gives `j − ks ≤ i − qs`);
//! - `InvCausal`: top-left aligned, `b ≥ a`;
//! - `BiCausal`: both, `a ≤ b ≤ a + (Lk − Lq)` (a band of width `Lk − Lq + 1`; empty when `Lk < Lq`).
//!
//! A row of a causal slice may be empty (when `Lk < Lq`, the first `Lq − Lk` rows see nothing), exactly
//! as in FlashAttention-2's bottom-right alignment.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::MaskError;

/// How a slice's rectangle is filled. See the module doc for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SliceKind {
    Full,
    Causal,
    InvCausal,
    BiCausal,
}

impl SliceKind {
    pub const ALL: [SliceKind; 4] = [SliceKind::Full, SliceKind::Causal, SliceKind::InvCausal, SliceKind::BiCausal];

    pub fn name(self) -> &'static str {
        match self {
            SliceKind::Full => "full",
            SliceKind::Causal => "causal",
            SliceKind::InvCausal => "inv_causal",
            SliceKind::BiCausal => "bi_causal",
        }
    }
}

impl fmt::Display for SliceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rectangle of the mask with its fill rule. Ranges are half-open, in token indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub q: Range<usize>,
    pub k: Range<usize>,
    pub kind: SliceKind,
}

impl Slice {
    pub fn new(q: Range<usize>, k: Range<usize>, kind: SliceKind) -> Self {
        Slice { q, k, kind }
    }

    pub fn q_len(&self) -> usize {
        self.q.end.saturating_sub(self.q.start)
    }

    pub fn k_len(&self) -> usize {
        self.k.end.saturating_sub(self.k.start)
    }

    /// Inclusive range of local key offsets `b` that local query row `a` attends, or `None` when the row
    /// is empty. This one function defines the semantics; everything else calls it or is tested against it.
    pub fn row_keys(&self, a: usize) -> Option<(usize, usize)> {
        let (lq, lk) = (self.q_len() as i64, self.k_len() as i64);
        if lk == 0 || a as i64 >= lq {
            return None;
        }
        let a = a as i64;
        let (lo, hi) = match self.kind {
            SliceKind::Full => (0, lk - 1),
            SliceKind::Causal => (0, (a + lk - lq).min(lk - 1)),
            SliceKind::InvCausal => (a, lk - 1),
            SliceKind::BiCausal => (a, (a + lk - lq).min(lk - 1)),
        };
        if hi < lo || hi < 0 {
            None
        } else {
            Some((lo.max(0) as usize, hi as usize))
        }
    }

    /// Does global query `i` attend global key `j` through this slice?
    pub fn contains(&self, i: usize, j: usize) -> bool {
        if !self.q.contains(&i) || !self.k.contains(&j) {
            return false;
        }
        match self.row_keys(i - self.q.start) {
            Some((lo, hi)) => (lo..=hi).contains(&(j - self.k.start)),
            None => false,
        }
    }

    /// Exact number of attended (i, j) pairs, closed form in integer arithmetic (no loop over rows).
    pub fn area(&self) -> u64 {
        let (lq, lk) = (self.q_len() as u64, self.k_len() as u64);
        if lq == 0 || lk == 0 {
            return 0;
        }
        match self.kind {
            SliceKind::Full => lq * lk,
            // Row a has min(a + lk − lq, lk − 1) + 1 keys when a + lk − lq ≥ 0.
            SliceKind::Causal | SliceKind::InvCausal => {
                // InvCausal row a has lk − a keys for a < lk: the mirror image of causal.
                if lk >= lq {
                    // rows a = 0..lq have a + lk − lq + 1 keys: sum = lq·(lk − lq + 1) + lq(lq−1)/2
                    lq * (lk - lq + 1) + lq * (lq - 1) / 2
                } else {
                    // only the last lk rows (causal) / first lk rows (inv) are non-empty: 1 + … + lk
                    lk * (lk + 1) / 2
                }
            }
            SliceKind::BiCausal => {
                if lk >= lq {
                    lq * (lk - lq + 1)
                } else {
                    0
                }
            }
        }
    }

    /// The q rows of the slice that attend at least one key, as a global range (may be empty).
    pub fn nonempty_rows(&self) -> Range<usize> {
        let (lq, lk) = (self.q_len(), self.k_len());
        if lq == 0 || lk == 0 {
            return self.q.start..self.q.start;
        }
        match self.kind {
            SliceKind::Full => self.q.clone(),
            SliceKind::Causal => {
                let skip = lq.saturating_sub(lk);
                self.q.start + skip..self.q.end
            }
            SliceKind::InvCausal => self.q.start..self.q.start + lq.min(lk),
            SliceKind::BiCausal => {
                if lk >= lq {
                    self.q.clone()
                } else {
                    self.q.start..self.q.start
                }
            }
        }
    }
}

/// A validated attention mask over `seqlen_q` queries and `seqlen_k` keys.
///
/// Invariants (checked by [`Mask::new`]): every slice lies inside the sequence, and no (i, j) pair is
/// covered by two slices — so the area is the plain sum of the slices' areas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    slices: Vec<Slice>,
}

impl Mask {
    /// Square self-attention mask; see [`Mask::rect`].
    pub fn new(seqlen: usize, slices: Vec<Slice>) -> Result<Self, MaskError> {
        Self::rect(seqlen, seqlen, slices)
    }

    /// Validates and builds. Empty slices (zero area) are dropped. Overlap is checked exactly: two
    /// slices whose rectangles intersect must have no common attended pair inside the intersection.
    pub fn rect(seqlen_q: usize, seqlen_k: usize, slices: Vec<Slice>) -> Result<Self, MaskError> {
        if seqlen_q == 0 || seqlen_k == 0 {
            return Err(MaskError::Invalid("sequence length must be at least 1".into()));
        }
        let mut kept = Vec::with_capacity(slices.len());
        for s in slices {
            if s.q.start > s.q.end || s.k.start > s.k.end {
                return Err(MaskError::Invalid(format!("slice {s:?} has a reversed range")));
            }
            if s.q.end > seqlen_q || s.k.end > seqlen_k {
                return Err(MaskError::Invalid(format!("slice q={:?} k={:?} lies outside the {seqlen_q}×{seqlen_k} sequence", s.q, s.k)));
            }
            if s.area() > 0 {
                kept.push(s);
            }
        }
        check_no_overlap(&kept)?;
        Ok(Mask { seqlen_q, seqlen_k, slices: kept })
    }

    pub fn slices(&self) -> &[Slice] {
        &self.slices
    }

    pub fn into_slices(self) -> Vec<Slice> {
        self.slices
    }

    /// Exact number of attended (query, key) pairs. O(number of slices).
    pub fn area(&self) -> u64 {
        self.slices.iter().map(Slice::area).sum()
    }

    /// area / (seqlen_q · seqlen_k), in [0, 1].
    pub fn density(&self) -> f64 {
        self.area() as f64 / (self.seqlen_q as f64 * self.seqlen_k as f64)
    }

    pub fn contains(&self, i: usize, j: usize) -> bool {
        self.slices.iter().any(|s| s.contains(i, j))
    }

    /// Fraction of (block_q × block_k) tiles that contain at least one attended pair — what a
    /// block-sparse kernel must visit. Edge tiles are counted as whole tiles. O(slices × tile rows they
    /// span · log), no per-tile set: per tile row the touched key-tile intervals are merged.
    pub fn block_sparsity(&self, block_q: usize, block_k: usize) -> f64 {
        let (bq, bk) = (block_q.max(1), block_k.max(1));
        let nbq = self.seqlen_q.div_ceil(bq);
        let nbk = self.seqlen_k.div_ceil(bk);
        let mut spans: Vec<(usize, usize, usize)> = Vec::new(); // (tile row, first, last key tile)
        for s in &self.slices {
            for_each_row_block(s, bq, |qb, lo, hi, _| spans.push((qb, lo / bk, hi / bk)));
        }
        spans.sort_unstable();
        let mut tiles: u64 = 0;
        let mut cur: Option<(usize, usize, usize)> = None;
        for (qb, a, b) in spans {
            match cur {
                Some((q, x, y)) if q == qb && a <= y + 1 => cur = Some((q, x, y.max(b))),
                _ => {
                    if let Some((_, x, y)) = cur {
                        tiles += (y - x + 1) as u64;
                    }
                    cur = Some((qb, a, b));
                }
            }
        }
        if let Some((_, x, y)) = cur {
            tiles += (y - x + 1) as u64;
        }
        tiles as f64 / (nbq as f64 * nbk as f64)
    }

    /// Exact number of attended pairs in each (cell_q × cell_k) cell of the mask, row-major, with the
    /// grid's shape `(rows, cols)` = (⌈S_q/cell_q⌉, ⌈S_k/cell_k⌉). Cost is proportional to the number of
    /// (slice, cell) intersections, not to S², so a 1M-token mask downsamples to 1024² cells quickly.
    pub fn cell_counts(&self, cell_q: usize, cell_k: usize) -> (usize, usize, Vec<u64>) {
        let (cq, ck) = (cell_q.max(1), cell_k.max(1));
        let rows = self.seqlen_q.div_ceil(cq);
        let cols = self.seqlen_k.div_ceil(ck);
        let mut counts = vec![0u64; rows * cols];
        for s in &self.slices {
            for_each_row_block(s, cq, |qb, lo, hi, r| {
                for kb in lo / ck..=hi / ck {
                    let k = kb * ck..((kb + 1) * ck).min(self.seqlen_k);
                    counts[qb * cols + kb] += clip_slice(s, r.clone(), k).iter().map(Slice::area).sum::<u64>();
                }
            });
        }
        (rows, cols, counts)
    }

    /// Row-major dense boolean mask (`seqlen_q · seqlen_k` entries, `true` = attend). Memory is
    /// S_q·S_k bytes: callers decide whether that fits.
    pub fn to_dense(&self) -> Vec<bool> {
        let mut out = vec![false; self.seqlen_q * self.seqlen_k];
        for s in &self.slices {
            for i in s.nonempty_rows() {
                if let Some((lo, hi)) = s.row_keys(i - s.q.start) {
                    let row = i * self.seqlen_k;
                    out[row + s.k.start + lo..=row + s.k.start + hi].fill(true);
                }
            }
        }
        out
    }

    /// Number of attended keys per query row (length seqlen_q).
    pub fn row_counts(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.seqlen_q];
        for s in &self.slices {
            for i in s.nonempty_rows() {
                if let Some((lo, hi)) = s.row_keys(i - s.q.start) {
                    out[i] += (hi - lo + 1) as u64;
                }
            }
        }
        out
    }

    /// Restricts the mask to the query rows `q` and key columns `k` (global indices), re-expressed in
    /// local coordinates of that sub-block. Used by context parallelism to hand a rank its piece.
    /// Exact: each slice is clipped into at most three slices of the same semantics.
    pub fn sub_block(&self, q: Range<usize>, k: Range<usize>) -> Mask {
        let mut out = Vec::new();
        for s in &self.slices {
            for piece in clip_slice(s, q.clone(), k.clone()) {
                out.push(Slice::new(piece.q.start - q.start..piece.q.end - q.start, piece.k.start - k.start..piece.k.end - k.start, piece.kind));
            }
        }
        Mask { seqlen_q: q.len().max(1), seqlen_k: k.len().max(1), slices: out }
    }

    /// Unicode picture, one character per cell, for small masks (a cell covers ⌈S/width⌉ tokens; `█`
    /// fully attended, `▒` partially, `·` empty).
    pub fn render(&self, width: usize) -> String {
        let width = width.max(1);
        let cq = self.seqlen_q.div_ceil(width).max(1);
        let ck = self.seqlen_k.div_ceil(width).max(1);
        let (rows, cols, counts) = self.cell_counts(cq, ck);
        let mut s = String::with_capacity(rows * (cols + 1) * 3);
        for r in 0..rows {
            let h = ((r + 1) * cq).min(self.seqlen_q) - r * cq;
            for c in 0..cols {
                let w = ((c + 1) * ck).min(self.seqlen_k) - c * ck;
                let n = counts[r * cols + c];
                s.push(if n == 0 {
                    '·'
                } else if n as usize == h * w {
                    '█'
                } else {
                    '▒'
                });
            }
            s.push('\n');
        }
        s
    }
}

/// Calls `f(block, lo, hi, rows)` for every block of `block` query rows that slice `s` has non-empty rows
/// in: `rows` are those rows (global), `lo..=hi` the union of their attended keys (global). Row key
/// intervals move monotonically, so the union is the span from the first row's and the last row's
/// intervals, and every key in it is attended by some row of the block.
fn for_each_row_block(s: &Slice, block: usize, mut f: impl FnMut(usize, usize, usize, Range<usize>)) {
    let rows = s.nonempty_rows();
    if rows.is_empty() {
        return;
    }
    let mut qb = rows.start / block;
    while qb * block < rows.end {
        let r0 = (qb * block).max(rows.start);
        let r1 = ((qb + 1) * block).min(rows.end);
        let (lo0, hi0) = s.row_keys(r0 - s.q.start).expect("non-empty row");
        let (lo1, hi1) = s.row_keys(r1 - 1 - s.q.start).expect("non-empty row");
        f(qb, s.k.start + lo0.min(lo1), s.k.start + hi0.max(hi1), r0..r1);
        qb += 1;
    }
}

/// The part of slice `s` inside the window `q × k`, as slices of the same semantics in global
/// coordinates (at most five; adjacent pieces on the same lines are merged). Each row's attended keys
/// form an interval whose edges are either constant or move by one per row; clipping to
/// `[k.start, k.end)` clamps an edge, which changes its slope at one row. Splitting rows at those points
/// leaves pieces whose edges are each constant or slope-1 — exactly full / causal / inv_causal /
/// bi_causal slices. O(1) in the number of rows.
pub fn clip_slice(s: &Slice, q: Range<usize>, k: Range<usize>) -> Vec<Slice> {
    let q0 = s.q.start.max(q.start);
    let q1 = s.q.end.min(q.end);
    let k0 = s.k.start.max(k.start);
    let k1 = s.k.end.min(k.end);
    if q0 >= q1 || k0 >= k1 {
        return vec![];
    }
    // Unclamped edges as lo(i) = i·slo + clo, hi(i) = i·shi + chi (global i, j), before clipping to
    // the slice's own key range — row_keys already clamps that, so use it at piece ends instead.
    let (lq, lk) = (s.q_len() as i64, s.k_len() as i64);
    let (qs, ks) = (s.q.start as i64, s.k.start as i64);
    let diag_hi = ks + lk - lq - qs; // hi(i) = i + diag_hi for causal / bi_causal
    let diag_lo = ks - qs; // lo(i) = i + diag_lo for inv_causal / bi_causal
    let mut cuts: Vec<i64> = vec![q0 as i64, q1 as i64];
    for c in [diag_hi, diag_lo] {
        // rows where a slope-1 edge crosses the window's or the slice's key bounds
        for bound in [k0 as i64, k1 as i64 - 1, ks, ks + lk - 1] {
            for d in [0i64, 1] {
                cuts.push(bound - c + d);
            }
        }
    }
    cuts.retain(|&c| c >= q0 as i64 && c <= q1 as i64);
    cuts.sort_unstable();
    cuts.dedup();
    let clipped = |i: usize| -> Option<(usize, usize)> {
        let (lo, hi) = s.row_keys(i - s.q.start)?;
        let lo = (s.k.start + lo).max(k0);
        let hi = (s.k.start + hi).min(k1 - 1);
        (lo <= hi).then_some((lo, hi))
    };
    // Rows r0..r1 whose clipped intervals move linearly, with the first and last row's (lo, hi).
    let mut spans: Vec<Span> = Vec::with_capacity(4);
    for w in cuts.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if a >= b {
            continue;
        }
        // The width is linear inside a piece, so its non-empty rows are a prefix or a suffix of it:
        // find the boundary by bisection (never a scan over rows).
        let first_where = |want_some: bool| {
            let (mut lo, mut hi) = (a, b);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if clipped(mid).is_some() == want_some {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        };
        let (r0, r1) = match (clipped(a).is_some(), clipped(b - 1).is_some()) {
            (true, true) => (a, b),
            (false, false) => continue,
            (false, true) => (first_where(true), b),
            (true, false) => (a, first_where(false)),
        };
        let span = (r0, r1, clipped(r0).unwrap(), clipped(r1 - 1).unwrap());
        // Merge with the previous piece when both lie on one pair of lines (cuts are conservative).
        if let Some(prev) = spans.last_mut() {
            if let Some(m) = merge_spans(prev, &span) {
                *prev = m;
                continue;
            }
        }
        spans.push(span);
    }
    spans
        .into_iter()
        .map(|(r0, r1, (lo_f, hi_f), (lo_l, hi_l))| {
            let n = r1 - r0;
            let kind = if n == 1 {
                SliceKind::Full
            } else {
                match (lo_l - lo_f == n - 1, hi_l - hi_f == n - 1) {
                    (false, false) => SliceKind::Full,
                    (false, true) => SliceKind::Causal,
                    (true, false) => SliceKind::InvCausal,
                    (true, true) => SliceKind::BiCausal,
                }
            };
            Slice::new(r0..r1, lo_f..hi_l.max(hi_f) + 1, kind)
        })
        .collect()
}

/// Rows `r0..r1` of a clipped piece with the first and the last row's attended keys `(lo, hi)`.
type Span = (usize, usize, (usize, usize), (usize, usize));

/// Joins two adjacent row spans when all four end rows lie on one lo line and one hi line, each of
/// slope 0 or 1 (each span is linear between its ends, so the union is then linear too).
fn merge_spans(p: &Span, c: &Span) -> Option<Span> {
    if p.1 != c.0 {
        return None;
    }
    let n = (c.1 - p.0) as i64;
    let (f, l) = (p.2, c.3);
    let slope = |x0: usize, x1: usize| -> Option<i64> {
        match x1 as i64 - x0 as i64 {
            0 => Some(0),
            d if d == n - 1 => Some(1),
            _ => None,
        }
    };
    let (sl, sh) = (slope(f.0, l.0)?, slope(f.1, l.1)?);
    let on_line = |row: usize, (lo, hi): (usize, usize)| {
        let d = (row - p.0) as i64;
        lo as i64 == f.0 as i64 + sl * d && hi as i64 == f.1 as i64 + sh * d
    };
    (on_line(p.1 - 1, p.3) && on_line(c.0, c.2)).then_some((p.0, c.1, f, l))
}

fn check_no_overlap(slices: &[Slice]) -> Result<(), MaskError> {
    // Sweep over q: sort by q start and compare only slices whose rectangles intersect; for those, compare
    // the attended key intervals row by row over the common rows (zoo masks rarely have such pairs).
    let mut idx: Vec<usize> = (0..slices.len()).collect();
    idx.sort_by_key(|&i| (slices[i].q.start, slices[i].k.start));
    let mut active: Vec<usize> = Vec::new();
    for &i in &idx {
        let s = &slices[i];
        active.retain(|&a| slices[a].q.end > s.q.start);
        for &a in &active {
            let t = &slices[a];
            if t.k.start < s.k.end && s.k.start < t.k.end && overlap_exact(s, t) {
                return Err(MaskError::Invalid(format!("slices overlap: q={:?} k={:?} ({}) and q={:?} k={:?} ({})", t.q, t.k, t.kind, s.q, s.k, s.kind)));
            }
        }
        active.push(i);
    }
    Ok(())
}

/// Whether two slices share an attended pair, row by row over their common rows.
fn overlap_exact(s: &Slice, t: &Slice) -> bool {
    let rows = s.q.start.max(t.q.start)..s.q.end.min(t.q.end);
    rows.into_iter().any(|i| match (global_row(s, i), global_row(t, i)) {
        (Some(x), Some(y)) => x.0 <= y.1 && y.0 <= x.1,
        _ => false,
    })
}

fn global_row(s: &Slice, i: usize) -> Option<(usize, usize)> {
    s.row_keys(i - s.q.start).map(|(lo, hi)| (s.k.start + lo, s.k.start + hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The slice rule written from the module doc, per (a, b), independent of `row_keys`.
    fn rule(s: &Slice, i: usize, j: usize) -> bool {
        if !s.q.contains(&i) || !s.k.contains(&j) {
            return false;
        }
        let (a, b) = ((i - s.q.start) as i64, (j - s.k.start) as i64);
        let d = s.k_len() as i64 - s.q_len() as i64;
        match s.kind {
            SliceKind::Full => true,
            SliceKind::Causal => b <= a + d,
            SliceKind::InvCausal => b >= a,
            SliceKind::BiCausal => a <= b && b <= a + d,
        }
    }

    fn random_slice(rng: &mut ChaCha8Rng, sq: usize, sk: usize) -> Slice {
        let (a, b) = (rng.gen_range(0..=sq), rng.gen_range(0..=sq));
        let (c, d) = (rng.gen_range(0..=sk), rng.gen_range(0..=sk));
        Slice::new(a.min(b)..a.max(b), c.min(d)..c.max(d), SliceKind::ALL[rng.gen_range(0..4)])
    }

    #[test]
    fn single_slices_match_the_rule() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..400 {
            let (sq, sk) = (rng.gen_range(1..30), rng.gen_range(1..30));
            let s = random_slice(&mut rng, sq, sk);
            let dense: Vec<bool> = (0..sq * sk).map(|x| rule(&s, x / sk, x % sk)).collect();
            let area = dense.iter().filter(|&&v| v).count() as u64;
            assert_eq!(s.area(), area, "{s:?}");
            let nonempty: Vec<usize> = (0..sq).filter(|&i| (0..sk).any(|j| dense[i * sk + j])).collect();
            let rows = s.nonempty_rows();
            assert_eq!(nonempty, rows.clone().collect::<Vec<_>>(), "{s:?}");
            let m = Mask::rect(sq, sk, vec![s.clone()]).unwrap();
            assert_eq!(m.to_dense(), dense, "{s:?}");
            assert_eq!(m.row_counts().iter().sum::<u64>(), area);
            for _ in 0..10 {
                let w = random_slice(&mut rng, sq, sk);
                let pieces = clip_slice(&s, w.q.clone(), w.k.clone());
                assert!(pieces.len() <= 5, "{s:?} {w:?} {pieces:?}");
                let clipped = Mask::rect(sq, sk, pieces).unwrap();
                for i in 0..sq {
                    for j in 0..sk {
                        let want = dense[i * sk + j] && w.q.contains(&i) && w.k.contains(&j);
                        assert_eq!(clipped.contains(i, j), want, "{s:?} window {:?}×{:?} at ({i},{j})", w.q, w.k);
                    }
                }
            }
            let (cq, ck) = (rng.gen_range(1..8), rng.gen_range(1..8));
            let (rows, cols, counts) = m.cell_counts(cq, ck);
            for r in 0..rows {
                for c in 0..cols {
                    let n = (r * cq..((r + 1) * cq).min(sq))
                        .flat_map(|i| (c * ck..((c + 1) * ck).min(sk)).map(move |j| (i, j)))
                        .filter(|&(i, j)| dense[i * sk + j])
                        .count() as u64;
                    assert_eq!(counts[r * cols + c], n, "{s:?} cell ({r},{c}) of {cq}×{ck}");
                    let tile_on = n > 0;
                    let _ = tile_on;
                }
            }
            let nonzero = counts.iter().filter(|&&n| n > 0).count();
            assert!((m.block_sparsity(cq, ck) - nonzero as f64 / (rows * cols) as f64).abs() < 1e-12, "{s:?}");
        }
    }

    #[test]
    fn overlap_is_rejected_exactly() {
        // A causal and an inv-causal slice on the same square share the diagonal…
        let e = Mask::new(8, vec![Slice::new(0..8, 0..8, SliceKind::Causal), Slice::new(0..8, 0..8, SliceKind::InvCausal)]);
        assert!(e.is_err());
        // …but causal and a strictly-upper band do not, although their rectangles coincide.
        let ok = Mask::new(8, vec![Slice::new(0..8, 0..8, SliceKind::Causal), Slice::new(0..7, 1..8, SliceKind::InvCausal)]);
        assert_eq!(ok.unwrap().area(), 64);
        assert!(Mask::new(4, vec![Slice::new(0..5, 0..4, SliceKind::Full)]).is_err());
        assert!(Mask::new(0, vec![]).is_err());
    }

    #[test]
    fn render_marks_full_partial_and_empty_cells() {
        let m = Mask::new(4, vec![Slice::new(0..4, 0..4, SliceKind::Causal)]).unwrap();
        assert_eq!(m.render(4), "█···\n██··\n███·\n████\n");
        assert_eq!(m.render(2), "▒·\n█▒\n");
    }
}
