//! The FA3 varlen calls of one piece: which documents it cuts, and how much of each.
//!
//! A document mask is a list of diagonal documents (one slice `q = k = doc`, full or causal). A piece
//! (query token ranges × key token ranges) meets each document in a few intervals; FA3 sees one varlen
//! sequence per document, spanning the document's query rows that attend anything and the keys that
//! are attended (its bounding box), with the exact number of attended pairs. Two placements:
//!
//! - [`Placement::Global`]: the ranges are global token ranges (attnbench's contiguous and zigzag
//!   sharding of the packed sequence);
//! - [`Placement::PerDocument`]: the layout of LongCA-bench's / MagiAttention's baselines (Transformer
//!   Engine's `thd` format): **every document** is cut into `chunks` = 2R equal chunks and ring member m
//!   holds chunks m and 2R−1−m of every document. The schedule is planned on one document spanning the
//!   whole sequence (a zigzag shard over R members: same token counts, same messages); a piece's ranges
//!   then name the chunk indices it holds, and each document contributes those chunks of itself.

use std::collections::BTreeMap;
use std::ops::Range;

use super::fa3::Segment;
use crate::mask::{Mask, SliceKind};

/// Documents of a mask whose every slice is a diagonal square (q range = k range) of kind full or
/// causal, sorted by start.
#[derive(Debug, Clone, PartialEq)]
pub struct Docs {
    pub starts: Vec<usize>,
    pub lens: Vec<usize>,
    pub causal: Vec<bool>,
}

impl Docs {
    /// `None` when some slice is not a full or causal diagonal square (then pieces fall back to one
    /// segment per sub-mask slice).
    pub fn of(mask: &Mask) -> Option<Docs> {
        let mut v: Vec<(usize, usize, bool)> = Vec::with_capacity(mask.slices().len());
        for s in mask.slices() {
            if s.q != s.k {
                return None;
            }
            let causal = match s.kind {
                SliceKind::Full => false,
                SliceKind::Causal => true,
                _ => return None,
            };
            v.push((s.q.start, s.q.len(), causal));
        }
        v.sort_unstable();
        Some(Docs { starts: v.iter().map(|x| x.0).collect(), lens: v.iter().map(|x| x.1).collect(), causal: v.iter().map(|x| x.2).collect() })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// `Some(causal)` when every document has the same kind.
    pub fn uniform_kind(&self) -> Option<bool> {
        let first = *self.causal.first()?;
        self.causal.iter().all(|&c| c == first).then_some(first)
    }

    /// The whole problem as one call: every document in full.
    pub fn whole(&self) -> Vec<Segment> {
        (0..self.len()).map(|d| segment(self.causal[d], &[(0, self.lens[d])], &[(0, self.lens[d])])).filter(|s| s.area > 0).collect()
    }
}

/// How a piece's token ranges map onto documents (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Global,
    /// `chunks` = 2 × ring degree; `seqlen` = tokens of the whole sequence.
    PerDocument {
        chunks: usize,
        seqlen: usize,
    },
}

/// Attended pairs between doc-local query rows `[a, b)` and keys `[c, e)`.
pub fn pair_area(causal: bool, (a, b): (usize, usize), (c, e): (usize, usize)) -> u64 {
    if a >= b || c >= e {
        return 0;
    }
    if !causal {
        return (b - a) as u64 * (e - c) as u64;
    }
    // Row i sees keys c..=min(i, e − 1): clamp(i + 1 − c, 0, e − c) of them.
    let mut sum = 0u64;
    let lo = a.max(c);
    let hi = b.min(e.saturating_sub(1));
    if lo < hi {
        // Σ_{i=lo}^{hi−1} (i + 1 − c)
        let (x, y) = ((lo + 1 - c) as u64, (hi - c) as u64);
        sum += (x + y) * (y + 1 - x) / 2;
    }
    let tail_from = a.max(e.saturating_sub(1)).max(c);
    if tail_from < b {
        sum += (b - tail_from) as u64 * (e - c) as u64;
    }
    sum
}

/// One document's segment: its attending query intervals × attended key intervals (doc-local).
fn segment(causal: bool, q: &[(usize, usize)], k: &[(usize, usize)]) -> Segment {
    let mut area = 0u64;
    let mut lq = 0usize;
    let mut k_used = vec![false; k.len()];
    for &qi in q {
        let mut any = false;
        for (j, &kj) in k.iter().enumerate() {
            let a = pair_area(causal, qi, kj);
            if a > 0 {
                any = true;
                k_used[j] = true;
                area += a;
            }
        }
        if any {
            lq += qi.1 - qi.0;
        }
    }
    let lk = k.iter().zip(&k_used).filter(|(_, &u)| u).map(|(kj, _)| kj.1 - kj.0).sum();
    Segment { lq, lk, area }
}

/// Doc-local intervals of `ranges` in every document they touch.
fn intervals_by_doc(docs: &Docs, ranges: &[Range<usize>]) -> BTreeMap<usize, Vec<(usize, usize)>> {
    let mut out: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        // First document that ends after r.start.
        let mut d = docs.starts.partition_point(|&s| s <= r.start).saturating_sub(1);
        while d < docs.len() && docs.starts[d] < r.end {
            let (s, e) = (docs.starts[d], docs.starts[d] + docs.lens[d]);
            let (a, b) = (r.start.max(s), r.end.min(e));
            if a < b {
                out.entry(d).or_default().push((a - s, b - s));
            }
            d += 1;
        }
    }
    out
}

/// Chunk indices (in a 2R grid over `seqlen`) of a piece's ranges, in order, without repeats.
fn chunk_ids(ranges: &[Range<usize>], chunks: usize, seqlen: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = ranges.iter().filter(|r| !r.is_empty()).map(|r| (r.start as u128 * chunks as u128 / seqlen.max(1) as u128) as usize).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Doc-local interval of chunk `j` of a document of `len` tokens cut into `chunks` chunks of
/// ⌈len/chunks⌉ (the last ones shorter or empty, as the `thd` padding leaves them).
fn chunk(len: usize, chunks: usize, j: usize) -> (usize, usize) {
    let c = len.div_ceil(chunks.max(1));
    ((j * c).min(len), ((j + 1) * c).min(len))
}

/// The varlen calls of a piece: one call (or, with `split_q`, one call per query range — per query
/// chunk under [`Placement::PerDocument`], as the all-gather baseline runs one call per half), each a
/// list of per-document segments with attended pairs.
pub fn piece_calls(docs: &Docs, place: Placement, q: &[Range<usize>], k: &[Range<usize>], split_q: bool) -> Vec<Vec<Segment>> {
    match place {
        Placement::Global => {
            let groups: Vec<Vec<Range<usize>>> = if split_q { q.iter().map(|r| vec![r.clone()]).collect() } else { vec![q.to_vec()] };
            let kd = intervals_by_doc(docs, k);
            groups
                .iter()
                .map(|qs| {
                    intervals_by_doc(docs, qs)
                        .into_iter()
                        .filter_map(|(d, qi)| kd.get(&d).map(|ki| segment(docs.causal[d], &qi, ki)))
                        .filter(|s| s.area > 0)
                        .collect()
                })
                .collect()
        }
        Placement::PerDocument { chunks, seqlen } => {
            let qc = chunk_ids(q, chunks, seqlen);
            let kc = chunk_ids(k, chunks, seqlen);
            let groups: Vec<Vec<usize>> = if split_q { qc.iter().map(|&j| vec![j]).collect() } else { vec![qc] };
            groups
                .iter()
                .map(|g| {
                    (0..docs.len())
                        .map(|d| {
                            let len = docs.lens[d];
                            let qi: Vec<(usize, usize)> = g.iter().map(|&j| chunk(len, chunks, j)).filter(|x| x.0 < x.1).collect();
                            let ki: Vec<(usize, usize)> = kc.iter().map(|&j| chunk(len, chunks, j)).filter(|x| x.0 < x.1).collect();
                            segment(docs.causal[d], &qi, &ki)
                        })
                        .filter(|s| s.area > 0)
                        .collect()
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::shard::block_mask;
    use crate::mask::Slice;

    fn doc_mask(lens: &[usize], kind: SliceKind) -> Mask {
        let mut s = 0;
        let slices = lens
            .iter()
            .map(|&l| {
                let sl = Slice::new(s..s + l, s..s + l, kind);
                s += l;
                sl
            })
            .collect();
        Mask::new(s, slices).unwrap()
    }

    #[test]
    fn pair_area_counts_cells() {
        for causal in [false, true] {
            for (q, k) in [((0, 5), (0, 5)), ((3, 9), (0, 4)), ((0, 4), (3, 9)), ((2, 7), (4, 6)), ((5, 6), (5, 6)), ((4, 4), (0, 3))] {
                let brute = (q.0..q.1).flat_map(|i| (k.0..k.1).map(move |j| (i, j))).filter(|&(i, j)| !causal || j <= i).count() as u64;
                assert_eq!(pair_area(causal, q, k), brute, "{causal} {q:?} {k:?}");
            }
        }
    }

    /// Global placement: the segments' areas add up to the exact area of the piece's sub-mask, for
    /// contiguous and zigzag-like range lists.
    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn global_segments_cover_the_block_mask() {
        for kind in [SliceKind::Full, SliceKind::Causal] {
            let m = doc_mask(&[7, 30, 1, 12, 14], kind);
            let docs = Docs::of(&m).unwrap();
            for (q, k) in [(vec![0..16], vec![0..64]), (vec![3..9, 40..50], vec![0..20, 44..64]), (vec![50..64], vec![10..40])] {
                let calls = piece_calls(&docs, Placement::Global, &q, &k, false);
                assert_eq!(calls.len(), 1);
                let area: u64 = calls[0].iter().map(|s| s.area).sum();
                assert_eq!(area, block_mask(&m, &q, &k).area(), "{kind:?} {q:?} {k:?}");
                assert!(calls[0].iter().all(|s| s.area <= s.lq as u64 * s.lk as u64));
            }
        }
    }

    /// Per-document placement: rank r of R holds chunks r and 2R−1−r of every document; over all
    /// (rank, origin) pairs the pieces cover every document exactly once, and the causal shapes are
    /// Transformer Engine's: the diagonal 2c × 2c causal, earlier origins 2c × c full, later ones c × 2c.
    #[test]
    fn per_document_pieces_are_te_shapes_and_cover_the_mask() {
        let lens = [64usize, 128, 32, 40];
        let s: usize = lens.iter().sum();
        let r = 4;
        let place = Placement::PerDocument { chunks: 2 * r, seqlen: s };
        for kind in [SliceKind::Full, SliceKind::Causal] {
            let m = doc_mask(&lens, kind);
            let docs = Docs::of(&m).unwrap();
            let c = s / (2 * r);
            let held = |x: usize| vec![x * c..(x + 1) * c, (2 * r - 1 - x) * c..(2 * r - x) * c];
            let mut total = 0u64;
            for rank in 0..r {
                for origin in 0..r {
                    let calls = piece_calls(&docs, place, &held(rank), &held(origin), false);
                    assert_eq!(calls.len(), 1);
                    for seg in &calls[0] {
                        total += seg.area;
                    }
                    if kind == SliceKind::Causal {
                        // The 128-token document: chunk 16 tokens.
                        let want = match origin.cmp(&rank) {
                            std::cmp::Ordering::Equal => Segment { lq: 32, lk: 32, area: 32 * 33 / 2 },
                            std::cmp::Ordering::Less => Segment { lq: 32, lk: 16, area: 32 * 16 },
                            std::cmp::Ordering::Greater => Segment { lq: 16, lk: 32, area: 16 * 32 },
                        };
                        assert_eq!(calls[0][1], want, "rank {rank} origin {origin}");
                    }
                }
            }
            assert_eq!(total, m.area(), "{kind:?}");
            // The all-gather baseline: one call per query chunk against every key chunk.
            let all: Vec<Range<usize>> = (0..2 * r).map(|x| x * c..(x + 1) * c).collect();
            let calls = piece_calls(&docs, place, &held(1), &all, true);
            assert_eq!(calls.len(), 2);
            if kind == SliceKind::Causal {
                // 128-token document, chunks 1 and 6 of 8 (16 tokens): keys up to the chunk's end.
                assert_eq!(calls[0][1], Segment { lq: 16, lk: 32, area: 16 * 16 + 16 * 17 / 2 });
                assert_eq!(calls[1][1], Segment { lq: 16, lk: 112, area: 16 * 96 + 16 * 17 / 2 });
            }
        }
    }
}
