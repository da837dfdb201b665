//! Per-piece compute time of a virtual rank: either **measured** (the piece is executed on this device
//! with exactly the tensors and sub-mask the real rank would use — the case's kernel (`MaskedAttention`)
//! on `block_mask(mask, piece.q, piece.k)` — warmup then the median of a few repeats), a **roofline**
//! model (FLOPs / (device peak × efficiency) + one launch overhead per kernel launch the sliced backend
//! would make), or the **FA3 tile model** ([`super::fa3`]: whole tiles per document segment, fitted to
//! published FlashAttention-3 kernel figures), for worlds whose pieces are far too slow to execute on
//! the machine at hand.
//!
//! Identical pieces — same q/k lengths, heads, pass and the same local sub-mask — cost the same, so the
//! measured model times each distinct piece once and reuses it (the simulator reports how many pieces
//! were timed out of how many were needed).

use std::collections::HashMap;
use std::ops::Range;

use tch::{Device, Tensor};

use super::comm_model::CpParams;
use super::fa3::{CallShape, Fa3Model, Segment, H100_MEM_TBPS, H100_PEAK_TFLOPS};
use crate::attn::merge::RunningMerge;
use crate::attn::KernelError;
use crate::attn::MaskedAttention;
use crate::case::DType;
use crate::cp::schedule::{CpLayout, GlueOp};
use crate::cp::shard::{block_mask, total_len};
use crate::mask::{Mask, Slice};
use crate::measure::{run_repeats, CpuTimeline, CudaEventClock, HostClock};
use crate::measure::{MeasureSettings, TimingMode};

/// Shape of one piece as the real rank computes it (the per-rank kernel's inputs).
#[derive(Debug, Clone)]
pub struct PieceShape<'a> {
    /// The virtual rank that computes the piece.
    pub rank: usize,
    pub q: &'a [Range<usize>],
    pub k: &'a [Range<usize>],
    pub batch: usize,
    pub heads_q: usize,
    /// KV heads of the tensors the rank holds for this piece (Hkv·repeat/U for Ulysses-type plans).
    pub heads_kv: usize,
    pub head_dim: usize,
    /// True for a backward piece, false for a forward piece.
    pub backward: bool,
    /// FLOPs of the piece for its pass (the schedule's number).
    pub flops: f64,
}

/// How a piece's time is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum ComputeModel {
    /// Execute the piece on `device` (warmup + median of `repeats`).
    Measured { device: Device, dtype: DType, warmup: usize, repeats: usize },
    /// FLOPs / (peak_tflops·10¹² × efficiency) + launches × launch_us.
    Roofline(Roofline),
    /// FlashAttention-3 varlen calls costed tile by tile ([`super::fa3`]); glue as the roofline's.
    Fa3(Fa3Compute),
}

/// The FA3 tile model of attention calls plus the bandwidth roofline of the glue work between them
/// (only `glue`'s memory and launch fields are used).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fa3Compute {
    pub kernel: Fa3Model,
    pub glue: Roofline,
}

/// Parameters of the roofline model. Defaults (see docs/SIMULATION.md): H100 SXM bf16 dense peak
/// 989 TFLOPS, efficiency 0.6 (what FlashAttention-3-class kernels sustain on long pieces on H100),
/// 10 µs per kernel launch (host launch + tail of a small varlen kernel); glue work streams through
/// HBM (3.35 TB/s on H100 SXM) at 0.8 of the datasheet bandwidth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roofline {
    /// Dense peak of the device for the dtype, TFLOPS.
    pub peak_tflops: f64,
    /// Fraction of the peak a long attention kernel sustains (0, 1].
    pub efficiency: f64,
    /// Fixed cost per kernel launch, microseconds.
    pub launch_us: f64,
    /// Datasheet memory bandwidth of the device, TB/s (10¹² bytes/s).
    pub mem_tbps: f64,
    /// Fraction of `mem_tbps` that elementwise and copy kernels sustain (0, 1].
    pub mem_efficiency: f64,
    /// Which device the peak is for (goes into the row's note).
    pub device: &'static str,
}

impl Roofline {
    /// Seconds of one piece: compute at the sustained rate plus one launch per varlen group (the
    /// number of launches the kernel makes on the GPU for this sub-mask).
    pub fn piece_s(&self, flops: f64, launches: usize) -> f64 {
        flops / (self.peak_tflops * 1e12 * self.efficiency) + launches as f64 * self.launch_us * 1e-6
    }

    /// Seconds of memory-bound glue work moving `bytes` through HBM in `launches` kernels.
    pub fn glue_s(&self, bytes: u64, launches: usize) -> f64 {
        bytes as f64 / (self.mem_tbps * 1e12 * self.mem_efficiency) + launches as f64 * self.launch_us * 1e-6
    }
}

/// Identity of a piece for the reuse cache: lengths, heads, pass and the local slices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PieceKey {
    sq: usize,
    sk: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    b: usize,
    backward: bool,
    slices: Vec<Slice>,
}

/// Times pieces under a [`ComputeModel`], caching identical pieces.
pub struct PieceTimer {
    /// The case's per-rank kernel: what measured pieces run and whose launches the roofline counts.
    attention: &'static dyn MaskedAttention,
    pub model: ComputeModel,
    cache: HashMap<PieceKey, f64>,
    glue_cache: HashMap<GlueOp, f64>,
    /// Pieces asked for / pieces actually executed (measured model) or evaluated.
    pub requested: usize,
    pub executed: usize,
    /// Softmax scale used for executed pieces.
    scale: f64,
    /// Every piece asked for: (rank, attended pairs of its sub-mask, query heads, backward) — what the
    /// virtual ranks computed, for checks against the real strategy's work.
    pub trace: Vec<(usize, u64, usize, bool)>,
}

impl PieceTimer {
    pub fn new(model: ComputeModel, head_dim: usize, attention: &'static dyn MaskedAttention) -> Self {
        PieceTimer {
            attention,
            model,
            cache: HashMap::new(),
            glue_cache: HashMap::new(),
            requested: 0,
            executed: 0,
            scale: 1.0 / (head_dim as f64).sqrt(),
            trace: Vec::new(),
        }
    }

    /// Records a piece whose time was obtained outside [`PieceTimer::time_s`] (the FA3 model's
    /// document segments), for the counts and the trace.
    pub fn record(&mut self, rank: usize, area: u64, heads_q: usize, backward: bool) {
        self.requested += 1;
        self.executed += 1;
        self.trace.push((rank, area, heads_q, backward));
    }

    /// Seconds of one piece whose sub-mask has already been built (`sub` = block_mask(mask, q, k)).
    pub fn time_s(&mut self, p: &PieceShape, sub: &Mask) -> Result<f64, KernelError> {
        self.requested += 1;
        self.trace.push((p.rank, sub.area(), p.heads_q, p.backward));
        let key = PieceKey {
            sq: total_len(p.q),
            sk: total_len(p.k),
            hq: p.heads_q,
            hkv: p.heads_kv,
            d: p.head_dim,
            b: p.batch,
            backward: p.backward,
            slices: sub.slices().to_vec(),
        };
        if let Some(&t) = self.cache.get(&key) {
            return Ok(t);
        }
        let t = match &self.model {
            ComputeModel::Roofline(r) => r.piece_s(p.flops, self.attention.gpu_launches(sub)),
            // Masks that are not documents: one varlen segment per slice of the sub-mask.
            ComputeModel::Fa3(f) => {
                let segs: Vec<Segment> = sub.slices().iter().map(|s| Segment { lq: s.q_len(), lk: s.k_len(), area: s.area() }).collect();
                let shape = CallShape { heads_q: p.heads_q, heads_kv: p.heads_kv, head_dim: p.head_dim, backward: p.backward, varlen: true };
                f.kernel.call_s(&segs.repeat(p.batch.max(1)), &shape)
            }
            ComputeModel::Measured { device, dtype, warmup, repeats } => {
                measure_piece(self.attention, &key, sub, *device, *dtype, *warmup, *repeats, self.scale)?
            }
        };
        self.executed += 1;
        self.cache.insert(key, t);
        Ok(t)
    }

    /// Seconds of one glue operation (`layout` gives the dtypes): measured by running the same tensor
    /// operations the real engine runs on tensors of the same size, or the bandwidth roofline of its
    /// HBM traffic ([`GlueOp::traffic`]). Identical operations are timed once.
    pub fn glue_s(&mut self, op: &GlueOp, layout: &CpLayout) -> Result<f64, KernelError> {
        if let Some(&t) = self.glue_cache.get(op) {
            return Ok(t);
        }
        let t = match &self.model {
            ComputeModel::Roofline(r) | ComputeModel::Fa3(Fa3Compute { glue: r, .. }) => {
                let (bytes, launches) = op.traffic(layout);
                r.glue_s(bytes, launches)
            }
            ComputeModel::Measured { device, dtype, warmup, repeats } => measure_glue(op, *device, *dtype, *warmup, *repeats)?,
        };
        self.glue_cache.insert(*op, t);
        Ok(t)
    }

    /// Seconds of the whole (single-device) problem under this model: measured by executing it, or
    /// the roofline of its FLOPs and launches.
    #[allow(clippy::too_many_arguments)]
    pub fn whole_problem_s(
        &mut self,
        mask: &Mask,
        batch: usize,
        heads_q: usize,
        heads_kv: usize,
        head_dim: usize,
        backward: bool,
        flops: f64,
    ) -> Result<f64, KernelError> {
        #[allow(clippy::single_range_in_vec_init)]
        let all = [0..mask.seqlen_q];
        let shape = PieceShape { rank: 0, q: &all, k: &all, batch, heads_q, heads_kv, head_dim, backward, flops };
        let sub = block_mask(mask, &all, &all);
        self.time_s(&shape, &sub)
    }
}

/// Median seconds of `f` on `device`, through the one measurement path (CUDA events with an L2 flush
/// on a GPU, the host clock on the CPU).
fn median_s(device: Device, warmup: usize, repeats: usize, f: &mut dyn FnMut() -> Result<(), KernelError>) -> Result<f64, KernelError> {
    let settings = timing_settings(warmup, repeats);
    let timing = match device {
        Device::Cuda(i) => run_repeats(&mut CudaEventClock::new(i, TimingMode::L2flush)?, &settings, f)?,
        _ => run_repeats(&mut HostClock::new(&CpuTimeline::default()), &settings, f)?,
    };
    Ok(timing.summary.median * 1e-3)
}

fn timing_settings(warmup: usize, repeats: usize) -> MeasureSettings {
    MeasureSettings { warmup, repeats: repeats.max(1), target_spread: None, check: false, timing_mode: TimingMode::L2flush, ..MeasureSettings::default() }
}

/// Runs a glue operation the way the engine does (`RunningMerge::add`, `acc += part.to_kind(acc)`, a
/// contiguous copy, a dtype cast) on fresh tensors of its size; median seconds.
fn measure_glue(op: &GlueOp, device: Device, dtype: DType, warmup: usize, repeats: usize) -> Result<f64, KernelError> {
    let kind = dtype.kind();
    let acc = crate::attn::acc_kind(kind);
    match *op {
        GlueOp::Merge { batch, heads, rows, head_dim } => {
            let (b, h, s, d) = (batch as i64, heads as i64, rows as i64, head_dim as i64);
            let part = crate::sys::rng::randn([b, h, s, d], (kind, device))?;
            let part_lse = crate::sys::rng::randn([b, h, s], (acc, device))?;
            let mut running = RunningMerge::new(b, h, s, d, kind, device)?;
            running.add(&part, &part_lse)?;
            median_s(device, warmup, repeats, &mut || running.add(&part, &part_lse))
        }
        GlueOp::Accumulate { elems } => {
            let mut total = Tensor::f_zeros([elems as i64], (acc, device))?;
            let part = crate::sys::rng::randn([elems as i64], (kind, device))?;
            median_s(device, warmup, repeats, &mut || {
                let _ = total.f_add_(&part.f_to_kind(acc)?)?;
                Ok(())
            })
        }
        GlueOp::Copy { elems, elem_bytes } => {
            let k = match elem_bytes {
                8 => tch::Kind::Double,
                4 => tch::Kind::Float,
                _ => kind,
            };
            let src = crate::sys::rng::randn([elems as i64], (k, device))?;
            let mut dst = src.f_empty_like()?;
            median_s(device, warmup, repeats, &mut || Ok(dst.f_copy_(&src)?))
        }
        GlueOp::Cast { elems } => {
            if acc == kind {
                return Ok(0.0);
            }
            let src = crate::sys::rng::randn([elems as i64], (kind, device))?;
            median_s(device, warmup, repeats, &mut || {
                let _ = src.f_to_kind(acc)?;
                Ok(())
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn measure_piece(
    attention: &dyn MaskedAttention,
    key: &PieceKey,
    sub: &Mask,
    device: Device,
    dtype: DType,
    warmup: usize,
    repeats: usize,
    scale: f64,
) -> Result<f64, KernelError> {
    let kind = dtype.kind();
    let (b, hq, hkv, sq, sk, d) = (key.b as i64, key.hq as i64, key.hkv as i64, key.sq as i64, key.sk as i64, key.d as i64);
    let q = crate::sys::rng::randn([b, hq, sq, d], (kind, device))?;
    let k = crate::sys::rng::randn([b, hkv, sk, d], (kind, device))?;
    let v = crate::sys::rng::randn([b, hkv, sk, d], (kind, device))?;
    if key.backward {
        // The real rank calls backward with the final out/lse of its rows; for timing, the piece's own
        // forward result has the same shapes and dtypes.
        let (out, lse) = attention.forward(&q, &k, &v, sub, scale)?;
        let dout = crate::sys::rng::randn([b, hq, sq, d], (kind, device))?;
        median_s(device, warmup, repeats, &mut || attention.backward(&q, &k, &v, &out, &lse, &dout, sub, scale).map(|_| ()))
    } else {
        median_s(device, warmup, repeats, &mut || attention.forward(&q, &k, &v, sub, scale).map(|_| ()))
    }
}

/// The compute model: FA3 tiles for attention, the bandwidth roofline with `cp` for the glue.
pub fn fa3_compute(kernel: Fa3Model, cp: &CpParams) -> ComputeModel {
    ComputeModel::Fa3(Fa3Compute { kernel, glue: glue_roofline(cp) })
}

/// The glue work of the fa3 model on H100: HBM traffic at `cp`'s efficiency plus its launches.
pub fn glue_roofline(cp: &CpParams) -> Roofline {
    Roofline {
        peak_tflops: H100_PEAK_TFLOPS,
        efficiency: 1.0,
        launch_us: cp.launch_us,
        mem_tbps: H100_MEM_TBPS,
        mem_efficiency: cp.mem_efficiency,
        device: "H100",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::SliceKind;

    #[test]
    fn roofline_is_flops_over_sustained_rate_plus_launches() {
        let r = Roofline { peak_tflops: 1000.0, efficiency: 0.5, launch_us: 10.0, mem_tbps: 2.0, mem_efficiency: 0.5, device: "H100" };
        assert!((r.piece_s(5e14, 2) - (1.0 + 20e-6)).abs() < 1e-12);
        // 1 TB/s sustained: 10⁹ bytes take 1 ms, plus 3 launches.
        assert!((r.glue_s(1_000_000_000, 3) - (1e-3 + 30e-6)).abs() < 1e-15);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn identical_pieces_are_timed_once() {
        let m = Mask::new(16, vec![Slice::new(0..16, 0..16, SliceKind::Causal)]).unwrap();
        let mut t = PieceTimer::new(ComputeModel::Measured { device: Device::Cpu, dtype: DType::Fp32, warmup: 0, repeats: 1 }, 8, &crate::attn::sliced::SLICED);
        let (q0, q1) = ([0..4], [4..8]);
        let k = [0..4];
        // Rank 0 q=0..4 vs k=0..4 (causal) and rank 1 q=4..8 vs k=0..4 (full): different sub-masks.
        let s0 = block_mask(&m, &q0, &k);
        let s1 = block_mask(&m, &q1, &k);
        let p0 = PieceShape { rank: 0, q: &q0, k: &k, batch: 1, heads_q: 2, heads_kv: 1, head_dim: 8, backward: false, flops: 0.0 };
        let p1 = PieceShape { q: &q1, k: &k, ..p0.clone() };
        t.time_s(&p0, &s0).unwrap();
        t.time_s(&p1, &s1).unwrap();
        t.time_s(&p1, &s1).unwrap();
        let pb = PieceShape { backward: true, ..p1.clone() };
        t.time_s(&pb, &s1).unwrap();
        assert_eq!((t.requested, t.executed), (4, 3));
    }
}
