//! Cost model of one FlashAttention-3 (Hopper) varlen call, the kernel every baseline of the published
//! CP figures calls (LongCA-bench / MagiAttention `_fa3_varlen_forward` / `_fa3_varlen_backward`).
//!
//! A call is a list of varlen **segments** (one per document: `lq` query tokens against `lk` keys,
//! `area` attended pairs; a segment is full when `area = lq·lk`, otherwise a bottom-right-aligned
//! causal block, which is what FA3 runs with `is_causal`). The kernel cuts every segment into tiles and
//! pays for whole tiles, so short documents and thin pieces waste most of a tile — this is what makes
//! per-piece efficiency depend on piece shape and on how many documents a piece cuts:
//!
//! - **forward** (`tile_size_fwd_sm90`, hdim 128, bf16): kBlockM = 128 rows × kBlockN = 176 keys (128
//!   when causal). Varlen calls pack the query heads that share a KV head into the rows (PackGQA,
//!   `should_pack_gqa` is true for varlen), so a segment has `lq·g` rows (g = Hq/Hkv) in
//!   ⌈lq·g/128⌉ work items per KV head; item b computes ⌈keys(b)/kBlockN⌉ tiles, keys(b) = lk for a
//!   full segment and `lk − lq + (last token of the item) + 1` for a causal one;
//! - **backward** (hdim 128): kBlockN = 128 keys per work item (one per query head; dK/dV of grouped
//!   heads accumulate in f32), kBlockM = 64 rows per tile (80 when not causal); a causal item starts
//!   at the first row that sees its keys. Pre-processing (dot(dO, O), zeroing the f32 accumulators)
//!   and post-processing (accumulators → bf16) are memory-bound extra kernels.
//!
//! Time of a call = `launch + (items · item + tiles · tile) / SMs`, at least `launch + item + the
//! longest item's tiles · tile` (a call with fewer items than SMs runs on part of the chip), with
//! `tile = tile FLOPs / (peak / SMs × efficiency)`. `efficiency`, `item` and `launch` are fitted per
//! pass and per kind of call to the published FA3 kernel figures ([`crate::sim::published`]): dense
//! calls to the full and causal bars, varlen calls to the full-document bars; the causal-document bars
//! are the check. Varlen calls get their own parameters because the published bars show them slower
//! than dense calls of the same work at every size (≈ 14 % at 32K tokens, and a fixed cost of tens
//! of µs per call that dense calls do not pay: PackGQA loads without TMA, the varlen scheduler's
//! metadata, the per-call host work of the varlen interface).

use serde::Serialize;

/// Parameters of one pass (forward or backward).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fa3Pass {
    /// Fraction of the per-SM dense peak a tile sustains in steady state, (0, 1].
    pub efficiency: f64,
    /// Fixed cost of one work item (prologue: load Q or K/V; epilogue: write O and LSE or dK/dV),
    /// microseconds of one SM.
    pub item_us: f64,
    /// Fixed cost of one call (launch, scheduler setup, the tail of the last wave), microseconds.
    pub launch_us: f64,
}

/// The kernel model: per-pass parameters of dense and of varlen calls, plus the device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fa3Model {
    /// Dense (batch × fixed length) calls.
    pub fwd: Fa3Pass,
    pub bwd: Fa3Pass,
    /// Varlen (`cu_seqlens`) calls — what every CP baseline makes.
    pub varlen_fwd: Fa3Pass,
    pub varlen_bwd: Fa3Pass,
    /// Streaming multiprocessors (H100 SXM: 132).
    pub sms: usize,
    /// Dense bf16 peak of the device, TFLOPS (H100 SXM: 989).
    pub peak_tflops: f64,
    /// HBM bandwidth × the fraction the backward's pre/post-processing kernels sustain, TB/s.
    pub mem_tbps: f64,
}

/// One varlen sequence of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub lq: usize,
    pub lk: usize,
    /// Attended (query, key) pairs, ≤ lq·lk.
    pub area: u64,
}

impl Segment {
    pub fn is_full(&self) -> bool {
        self.area == self.lq as u64 * self.lk as u64
    }
}

/// The heads and pass of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallShape {
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub backward: bool,
    /// Varlen (`cu_seqlens`) call: PackGQA in the forward. False for a dense batch-1 call.
    pub varlen: bool,
}

/// Work of a call: work items and tiles, and the most tiles one item computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    pub items: u64,
    pub tiles: u64,
    pub max_item_tiles: u64,
}

/// What a call costs before the parameters: work items, FLOPs of all its tiles (masked or not), the
/// tile FLOPs of its longest item, and the backward's memory-bound extra seconds. Time is linear in
/// the parameters, which makes fitting them cheap.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CallCost {
    pub items: f64,
    pub tile_flops: f64,
    pub longest_flops: f64,
    pub extra_s: f64,
}

impl CallCost {
    /// `launch + max((items · item + tile FLOPs / rate) / SMs, item + longest / rate) + extra`, with
    /// rate = per-SM peak (FLOP/s) × efficiency.
    pub fn time_s(&self, p: &Fa3Pass, per_sm_peak: f64, sms: f64) -> f64 {
        if self.items == 0.0 {
            return p.launch_us * 1e-6;
        }
        let rate = per_sm_peak * p.efficiency;
        let item = p.item_us * 1e-6;
        p.launch_us * 1e-6 + ((self.items * item + self.tile_flops / rate) / sms).max(item + self.longest_flops / rate) + self.extra_s
    }
}

const FWD_M: usize = 128;
const FWD_N_FULL: usize = 176;
const FWD_N_CAUSAL: usize = 128;
const BWD_N: usize = 128;
const BWD_M_FULL: usize = 80;
const BWD_M_CAUSAL: usize = 64;

/// Tiles and items FA3 runs for `segs` (see the module comment).
pub fn work(segs: &[Segment], shape: &CallShape) -> Work {
    let mut w = Work::default();
    let (hq, hkv) = (shape.heads_q.max(1) as u64, shape.heads_kv.max(1) as u64);
    for s in segs.iter().filter(|s| s.lq > 0 && s.lk > 0) {
        let full = s.is_full();
        let (lq, lk) = (s.lq, s.lk);
        if !shape.backward {
            let (g, heads) = if shape.varlen { ((hq / hkv).max(1) as usize, hkv) } else { (1, hq) };
            let bn = if full { FWD_N_FULL } else { FWD_N_CAUSAL };
            let blocks = (lq * g).div_ceil(FWD_M);
            let mut tiles = 0u64;
            let mut most = 0u64;
            if full {
                let t = lk.div_ceil(bn) as u64;
                tiles = t * blocks as u64;
                most = t;
            } else {
                for b in 0..blocks {
                    let last_token = ((b + 1) * FWD_M).div_ceil(g).min(lq);
                    let keys = (lk + last_token).saturating_sub(lq).min(lk);
                    let t = keys.div_ceil(bn) as u64;
                    tiles += t;
                    most = most.max(t);
                }
            }
            w.items += blocks as u64 * heads;
            w.tiles += tiles * heads;
            w.max_item_tiles = w.max_item_tiles.max(most);
        } else {
            let bm = if full { BWD_M_FULL } else { BWD_M_CAUSAL };
            let nblocks = lk.div_ceil(BWD_N);
            let mblocks = lq.div_ceil(bm) as u64;
            let offset = lk - lq.min(lk);
            let mut tiles = 0u64;
            let mut most = 0u64;
            for n in 0..nblocks {
                let t = if full {
                    mblocks
                } else {
                    // Rows i see keys ≤ offset + i: the first row that sees key n·BWD_N.
                    let first = (n * BWD_N).saturating_sub(offset);
                    if first >= lq {
                        0
                    } else {
                        mblocks - (first / bm) as u64
                    }
                };
                tiles += t;
                most = most.max(t);
            }
            w.items += nblocks as u64 * hq;
            w.tiles += tiles * hq;
            w.max_item_tiles = w.max_item_tiles.max(most);
        }
    }
    w
}

impl Fa3Model {
    /// FLOPs of one tile of the pass (the tile's full area, masked or not).
    pub fn tile_flops(backward: bool, full: bool, head_dim: usize) -> f64 {
        if backward {
            let bm = if full { BWD_M_FULL } else { BWD_M_CAUSAL };
            2.5 * 4.0 * (bm * BWD_N * head_dim) as f64
        } else {
            let bn = if full { FWD_N_FULL } else { FWD_N_CAUSAL };
            4.0 * (FWD_M * bn * head_dim) as f64
        }
    }

    /// Seconds of one call over `segs` (empty segments are skipped; a call with nothing to do costs
    /// its launch).
    /// The parameters of a call of this shape.
    pub fn pass(&self, shape: &CallShape) -> &Fa3Pass {
        match (shape.varlen, shape.backward) {
            (false, false) => &self.fwd,
            (false, true) => &self.bwd,
            (true, false) => &self.varlen_fwd,
            (true, true) => &self.varlen_bwd,
        }
    }

    /// Seconds of one call over `segs` (empty segments are skipped; a call with nothing to do costs
    /// its launch).
    pub fn call_s(&self, segs: &[Segment], shape: &CallShape) -> f64 {
        let c = self.cost(segs, shape);
        c.time_s(self.pass(shape), self.peak_tflops * 1e12 / self.sms as f64, self.sms as f64)
    }

    /// The parameter-free part of a call's cost (see [`CallCost`]).
    pub fn cost(&self, segs: &[Segment], shape: &CallShape) -> CallCost {
        // Full and causal segments use different tiles: count each group with its own tile.
        let (full, causal): (Vec<Segment>, Vec<Segment>) = segs.iter().partition(|s| s.is_full());
        let mut c = CallCost::default();
        for (group, is_full) in [(full, true), (causal, false)] {
            if group.is_empty() {
                continue;
            }
            let w = work(&group, shape);
            let tf = Self::tile_flops(shape.backward, is_full, shape.head_dim);
            c.items += w.items as f64;
            c.tile_flops += w.tiles as f64 * tf;
            c.longest_flops = c.longest_flops.max(w.max_item_tiles as f64 * tf);
        }
        if shape.backward {
            c.extra_s = self.bwd_extra_s(segs, shape);
        }
        c
    }

    /// The backward's memory-bound pre- and post-processing: read O and dO, zero and convert the f32
    /// dQ accumulator (and the dK/dV ones when query heads share KV heads). Their launches are part of
    /// the backward's fitted `launch_us`.
    pub fn bwd_extra_s(&self, segs: &[Segment], shape: &CallShape) -> f64 {
        let (tq, tk): (u64, u64) = segs.iter().fold((0, 0), |(a, b), s| (a + s.lq as u64, b + s.lk as u64));
        let q_elems = (tq * shape.heads_q as u64 * shape.head_dim as u64) as f64;
        let kv_elems = (tk * shape.heads_kv as u64 * shape.head_dim as u64) as f64;
        let gqa = shape.heads_q > shape.heads_kv;
        // O, dO read (2 + 2 B); dQ accumulator zeroed (4 B), read and written back in bf16 (4 + 2 B).
        let mut bytes = q_elems * 14.0;
        if gqa {
            // dK and dV accumulators: zeroed (2 × 4 B), read (2 × 4 B) and written in bf16 (2 × 2 B).
            bytes += kv_elems * 20.0;
        }
        bytes / (self.mem_tbps * 1e12)
    }
}

// ---------------------------------------------------------------------------------------------------
// H100 (the device of the published figures) and the kernel parameters fitted to its FA3 bars
// ---------------------------------------------------------------------------------------------------

/// H100 SXM: streaming multiprocessors, dense bf16 peak (TFLOPS), HBM (TB/s).
pub const H100_SMS: usize = 132;
pub const H100_PEAK_TFLOPS: f64 = 989.4;
pub const H100_MEM_TBPS: f64 = 3.35;
/// Fraction of HBM bandwidth FA3's backward pre/post-processing kernels sustain (an assumption).
pub const FA3_MEM_EFFICIENCY: f64 = 0.8;

/// The FA3 model on H100 with the kernel parameters fitted to the published kernel bars
/// ([`crate::sim::fit::fit_kernel`] reproduces them; a test checks it).
pub fn h100_fa3() -> Fa3Model {
    Fa3Model {
        fwd: pass_of_tuple(FITTED_FWD),
        bwd: pass_of_tuple(FITTED_BWD),
        varlen_fwd: pass_of_tuple(FITTED_VARLEN_FWD),
        varlen_bwd: pass_of_tuple(FITTED_VARLEN_BWD),
        sms: H100_SMS,
        peak_tflops: H100_PEAK_TFLOPS,
        mem_tbps: H100_MEM_TBPS * FA3_MEM_EFFICIENCY,
    }
}

fn pass_of_tuple(t: (f64, f64, f64)) -> Fa3Pass {
    Fa3Pass { efficiency: t.0, item_us: t.1, launch_us: t.2 }
}

/// (efficiency, µs per work item, µs per call) of dense and varlen calls, forward and backward, as
/// [`crate::sim::fit::fit_kernel`] fits them to the published kernel bars.
pub const FITTED_FWD: (f64, f64, f64) = (0.704, 0.0, 16.0);
pub const FITTED_BWD: (f64, f64, f64) = (0.604, 1.5, 46.0);
pub const FITTED_VARLEN_FWD: (f64, f64, f64) = (0.704, 3.35, 81.0);
pub const FITTED_VARLEN_BWD: (f64, f64, f64) = (0.604, 14.25, 186.0);

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(backward: bool, varlen: bool) -> CallShape {
        CallShape { heads_q: 64, heads_kv: 8, head_dim: 128, backward, varlen }
    }

    fn full(lq: usize, lk: usize) -> Segment {
        Segment { lq, lk, area: (lq * lk) as u64 }
    }

    fn causal(l: usize) -> Segment {
        Segment { lq: l, lk: l, area: (l * (l + 1) / 2) as u64 }
    }

    #[test]
    fn forward_tiles_follow_the_tile_grid() {
        // Dense 1024 × 1024 full, 64 heads: 8 row blocks × 6 key tiles (176 wide) per head.
        let w = work(&[full(1024, 1024)], &shape(false, false));
        assert_eq!((w.items, w.tiles, w.max_item_tiles), (8 * 64, 8 * 6 * 64, 6));
        // Varlen packs the 8 query heads of a KV head: 1024·8 rows = 64 blocks per KV head.
        let w = work(&[full(1024, 1024)], &shape(false, true));
        assert_eq!((w.items, w.tiles), (64 * 8, 64 * 6 * 8));
        // A 32-token document still costs one whole tile per (packed) row block: 2 blocks of 128
        // rows (32 tokens × 8 heads = 256 rows), one key tile each, 8 KV heads.
        let w = work(&[causal(32)], &shape(false, true));
        assert_eq!((w.items, w.tiles), (2 * 8, 2 * 8));
        // Causal 1024 dense: row block b sees (b+1)·128 keys → b+1 tiles of 128: 1+…+8 = 36.
        let w = work(&[causal(1024)], &shape(false, false));
        assert_eq!(w.tiles, 36 * 64);
        // Bottom-right alignment: 256 queries against 1024 keys see keys up to 768 + row.
        let s = Segment { lq: 256, lk: 1024, area: (256 * 768 + 256 * 257 / 2) as u64 };
        let w = work(&[s], &shape(false, false));
        assert_eq!(w.tiles, (7 + 8) * 64);
    }

    #[test]
    fn backward_tiles_start_at_the_first_row_that_sees_the_keys() {
        // Full 1024²: 8 key blocks × ⌈1024/80⌉ = 13 row tiles, per query head.
        let w = work(&[full(1024, 1024)], &shape(true, true));
        assert_eq!((w.items, w.tiles), (8 * 64, 8 * 13 * 64));
        // Causal 1024²: key block n is seen from row n·128 on: 16 − 2n tiles of 64 rows.
        let w = work(&[causal(1024)], &shape(true, true));
        assert_eq!(w.tiles, (0..8).map(|n| 16 - 2 * n).sum::<u64>() * 64);
    }

    #[test]
    fn short_documents_run_far_below_long_ones() {
        let m = Fa3Model {
            fwd: Fa3Pass { efficiency: 0.75, item_us: 1.0, launch_us: 10.0 },
            bwd: Fa3Pass { efficiency: 0.6, item_us: 2.0, launch_us: 20.0 },
            varlen_fwd: Fa3Pass { efficiency: 0.75, item_us: 1.0, launch_us: 10.0 },
            varlen_bwd: Fa3Pass { efficiency: 0.6, item_us: 2.0, launch_us: 20.0 },
            sms: 132,
            peak_tflops: 989.0,
            mem_tbps: 2.7,
        };
        let tflops = |segs: &[Segment], bwd: bool| {
            let area: u64 = segs.iter().map(|s| s.area).sum();
            let flops = 4.0 * area as f64 * 64.0 * 128.0 * if bwd { 2.5 } else { 1.0 };
            flops / m.call_s(segs, &shape(bwd, true)) / 1e12
        };
        let long = tflops(&[causal(65536)], false);
        let short = tflops(&vec![causal(64); 1024], false);
        assert!(long > 600.0 && long < 0.75 * 989.0, "{long}");
        assert!(short < long / 3.0, "{short} vs {long}");
        // Same tokens in one full segment vs cut into 64 documents: cutting loses throughput.
        assert!(tflops(&vec![full(128, 128); 64], true) < tflops(&[full(8192, 8192)], true) / 2.0);
    }
}
