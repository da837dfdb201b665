//! Sequence sharding for context parallelism: which global token ranges each rank holds, the block
//! masks between such range lists, and the per-rank work (attended area) that load imbalance is
//! computed from.
//!
//! - **Contiguous**: rank r holds `[r·S/W, (r+1)·S/W)`. Under a causal mask the last rank does almost
//!   twice the mean work: imbalance = (2cW − c + 1)/(Wc + 1) with c = S/W, → (2W − 1)/W for large c.
//! - **Zigzag**: the sequence is cut into 2W chunks and rank r holds chunks r and 2W−1−r (one early,
//!   one late), so causal work is equal on every rank (imbalance exactly 1 when 2W divides S).
//!
//! Uneven lengths are handled: chunk lengths differ by at most one token (the first ones are longer).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::case::Sharding;
use crate::cp::comm::even_ranges;
use crate::mask::{Mask, MaskError};

/// The token ranges (global, half-open, in the order they are concatenated in the rank's local
/// tensors) of every rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub kind: Sharding,
    pub seqlen: usize,
    pub ranks: Vec<Vec<Range<usize>>>,
}

impl Shard {
    /// Partitions `seqlen` tokens over `world` ranks. Every rank must get at least one token per chunk:
    /// `seqlen ≥ world` (contiguous) or `seqlen ≥ 2·world` (zigzag), else a one-line error.
    pub fn new(kind: Sharding, seqlen: usize, world: usize) -> Result<Shard, MaskError> {
        if world == 0 {
            return Err(MaskError::bad("world_size", "must be at least 1"));
        }
        let chunks = match kind {
            Sharding::Contiguous => world,
            Sharding::Zigzag => 2 * world,
        };
        if seqlen < chunks {
            return Err(MaskError::bad("seqlen", format!("{seqlen} tokens cannot be split into {chunks} {kind} chunks for {world} ranks")));
        }
        let parts = even_ranges(seqlen, chunks);
        let ranks = match kind {
            Sharding::Contiguous => parts.into_iter().map(|r| vec![r]).collect(),
            Sharding::Zigzag => (0..world).map(|r| vec![parts[r].clone(), parts[2 * world - 1 - r].clone()]).collect(),
        };
        Ok(Shard { kind, seqlen, ranks })
    }

    pub fn world(&self) -> usize {
        self.ranks.len()
    }

    /// Ranges of rank `r`.
    pub fn ranges(&self, r: usize) -> &[Range<usize>] {
        &self.ranks[r]
    }

    /// Tokens held by rank `r`.
    pub fn len(&self, r: usize) -> usize {
        total_len(&self.ranks[r])
    }

    /// Attended area of the rows each rank owns (query-sharded work), exact.
    pub fn areas(&self, mask: &Mask) -> Vec<u64> {
        self.ranks.iter().map(|rs| rs.iter().map(|q| mask.sub_block(q.clone(), 0..mask.seqlen_k).area()).sum()).collect()
    }

    /// max / mean of [`Shard::areas`] (1.0 = balanced; 1.0 also for an empty mask).
    pub fn imbalance(&self, mask: &Mask) -> f64 {
        imbalance(&self.areas(mask))
    }
}

/// max / mean of per-rank work (1.0 when all are zero).
pub fn imbalance(work: &[u64]) -> f64 {
    let max = work.iter().copied().max().unwrap_or(0) as f64;
    let mean = work.iter().map(|&a| a as f64).sum::<f64>() / work.len().max(1) as f64;
    if mean == 0.0 {
        1.0
    } else {
        max / mean
    }
}

/// Sum of the lengths of a range list.
pub fn total_len(ranges: &[Range<usize>]) -> usize {
    ranges.iter().map(|r| r.len()).sum()
}

/// The mask between a query range list and a key range list, in the local coordinates of the
/// concatenated ranges (query rows `q[0]` then `q[1]`…, key columns likewise). Exact, via
/// [`Mask::sub_block`] per pair of ranges.
pub fn block_mask(mask: &Mask, q: &[Range<usize>], k: &[Range<usize>]) -> Mask {
    let mut slices = Vec::new();
    let mut oq = 0;
    for qr in q {
        let mut ok = 0;
        for kr in k {
            for s in mask.sub_block(qr.clone(), kr.clone()).into_slices() {
                slices.push(crate::mask::Slice::new(s.q.start + oq..s.q.end + oq, s.k.start + ok..s.k.end + ok, s.kind));
            }
            ok += kr.len();
        }
        oq += qr.len();
    }
    // Pieces of a valid mask restricted to disjoint blocks cannot overlap or leave the block.
    Mask::rect(total_len(q).max(1), total_len(k).max(1), slices).expect("sub-blocks of a valid mask form a valid mask")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{Slice, SliceKind};

    fn causal(s: usize) -> Mask {
        Mask::new(s, vec![Slice::new(0..s, 0..s, SliceKind::Causal)]).unwrap()
    }

    #[test]
    fn contiguous_causal_imbalance_is_analytic() {
        for (s, w) in [(1024usize, 4usize), (96, 2), (4096, 8), (120, 3)] {
            let sh = Shard::new(Sharding::Contiguous, s, w).unwrap();
            let c = (s / w) as f64;
            let wf = w as f64;
            let expected = (2.0 * c * wf - c + 1.0) / (wf * c + 1.0);
            let got = sh.imbalance(&causal(s));
            assert!((got - expected).abs() < 1e-12, "S={s} W={w}: {got} vs {expected}");
        }
        // 1024 over 4: exactly 1793/1025 ≈ 1.749, heading to (2W−1)/W = 1.75.
        assert!((Shard::new(Sharding::Contiguous, 1024, 4).unwrap().imbalance(&causal(1024)) - 1793.0 / 1025.0).abs() < 1e-12);
    }

    #[test]
    fn zigzag_causal_is_balanced() {
        for (s, w) in [(1024usize, 4usize), (96, 2), (96, 3), (4096, 8)] {
            let sh = Shard::new(Sharding::Zigzag, s, w).unwrap();
            let areas = sh.areas(&causal(s));
            assert!(areas.iter().all(|&a| a == areas[0]), "{areas:?}");
            assert_eq!(sh.imbalance(&causal(s)), 1.0);
            assert_eq!(areas.iter().sum::<u64>(), causal(s).area());
        }
    }

    #[test]
    fn uneven_splits_cover_the_sequence_once() {
        for kind in [Sharding::Contiguous, Sharding::Zigzag] {
            let sh = Shard::new(kind, 101, 3).unwrap();
            let mut seen = [0u8; 101];
            for r in 0..3 {
                for rg in sh.ranges(r) {
                    for i in rg.clone() {
                        seen[i] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1));
            let lens: Vec<usize> = (0..3).map(|r| sh.len(r)).collect();
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{lens:?}");
        }
        assert!(Shard::new(Sharding::Zigzag, 5, 3).unwrap_err().to_string().contains("seqlen"));
    }

    #[test]
    fn block_mask_matches_dense_restriction() {
        let m = Mask::new(20, vec![Slice::new(0..12, 0..12, SliceKind::Causal), Slice::new(12..20, 4..20, SliceKind::Causal)]).unwrap();
        let q = vec![2..5, 15..20];
        let k = vec![10..14, 0..3];
        let b = block_mask(&m, &q, &k);
        let qi: Vec<usize> = q.iter().flat_map(|r| r.clone()).collect();
        let kj: Vec<usize> = k.iter().flat_map(|r| r.clone()).collect();
        for (a, &i) in qi.iter().enumerate() {
            for (c, &j) in kj.iter().enumerate() {
                assert_eq!(b.contains(a, c), m.contains(i, j), "({i},{j})");
            }
        }
    }
}
