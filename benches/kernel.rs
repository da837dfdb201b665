//! Criterion microbenchmarks of attention kernels through attnbench's backends.
//!
//! On a GPU, time is measured with CUDA events ([`CudaEventTime`], a criterion `Measurement`): criterion
//! reports GPU time of the kernel launches between the two events, not host time (a host clock around
//! an asynchronous launch measures the launch, or a sync, not the kernel). Caches stay warm between
//! iterations (criterion's batches run back to back), i.e. attnbench's `back2back` timing mode; use
//! `attnbench kernel` for cold-L2 numbers. Without a GPU the CPU cases run with the wall clock.
//!
//!   cargo bench --bench kernel                  # CPU: sdpa-flash / sliced / naive at 2K
//!   cargo bench --bench kernel -- cuda          # GPU cases only (needs CUDA)

use std::time::Duration;

use attnbench::backend::{find_backend, Inputs, Kernel};
use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::mask::{build_pattern, Params};
use attnbench::sys::cuda::{device_synchronize, CudaEvent};
use attnbench::sys::{cuda_available, ensure_cuda_loaded};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// CUDA-event clock for criterion: `start` records an event on the current stream of device 0,
/// `end` records another and returns the elapsed GPU time in nanoseconds (f64), so criterion's
/// duration formatting applies unchanged.
pub struct CudaEventTime;

static WALL: WallTime = WallTime;

impl Measurement for CudaEventTime {
    type Intermediate = CudaEvent;
    type Value = f64;

    fn start(&self) -> CudaEvent {
        let e = CudaEvent::new().expect("creating a CUDA event");
        e.record(0).expect("recording a CUDA event");
        e
    }

    fn end(&self, start: CudaEvent) -> f64 {
        let stop = CudaEvent::new().expect("creating a CUDA event");
        stop.record(0).expect("recording a CUDA event");
        start.elapsed_ms(&stop).expect("CUDA event elapsed time") * 1e6
    }

    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }

    fn zero(&self) -> f64 {
        0.0
    }

    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

struct Prepared {
    inputs: Inputs,
    kernel: Box<dyn Kernel>,
    flops: f64,
}

fn prepare(backend: &str, pattern: &str, seqlen: usize, heads: &str, head_dim: usize, dtype: DType, device: DeviceKind) -> Option<Prepared> {
    let heads: HeadLayout = heads.parse().ok()?;
    let case = Case::kernel(backend, pattern, Params::new(), seqlen, heads, head_dim, dtype, Pass::Fwd, device);
    let masks = build_pattern(pattern, seqlen, &Params::new()).ok()?;
    let b = find_backend(backend).ok()?;
    if let Err(why) = b.supports(&case, &masks) {
        eprintln!("skipping {backend} {pattern}: {why}");
        return None;
    }
    let flops = attnbench::flops::pass_flops(masks.area_over_heads(heads.q), head_dim, 1, Pass::Fwd);
    let inputs = Inputs::new(&case, masks, 42, false).ok()?;
    let kernel = b.prepare(&case, &inputs).ok()?;
    Some(Prepared { inputs, kernel, flops })
}

fn cpu(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu-fwd-causal-2K-4:2-d64-fp32");
    g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for backend in ["sdpa-flash", "sliced", "naive"] {
        let Some(mut p) = prepare(backend, "causal", 2048, "4:2", 64, DType::Fp32, DeviceKind::Cpu) else { continue };
        g.throughput(Throughput::Elements(p.flops as u64));
        g.bench_function(backend, |b| b.iter(|| p.kernel.forward(&p.inputs).expect("forward")));
    }
    g.finish();
}

fn cuda(c: &mut Criterion<CudaEventTime>) {
    if !cuda_available() {
        eprintln!("no CUDA device: skipping the CUDA-event benchmarks");
        return;
    }
    let mut g = c.benchmark_group("cuda-fwd-causal-16K-64:8-d128-bf16");
    g.sample_size(20);
    for backend in ["sdpa-flash", "sdpa-cudnn", "flash-varlen", "sliced"] {
        let Some(mut p) = prepare(backend, "causal", 16384, "64:8", 128, DType::Bf16, DeviceKind::Cuda) else { continue };
        g.throughput(Throughput::Elements(p.flops as u64));
        g.bench_function(backend, |b| b.iter(|| p.kernel.forward(&p.inputs).expect("forward")));
        let _ = device_synchronize(0);
    }
    g.finish();
}

fn cuda_criterion() -> Criterion<CudaEventTime> {
    ensure_cuda_loaded();
    Criterion::default().with_measurement(CudaEventTime)
}

criterion_group!(cpu_benches, cpu);
criterion_group! {
    name = cuda_benches;
    config = cuda_criterion();
    targets = cuda
}
criterion_main!(cpu_benches, cuda_benches);
