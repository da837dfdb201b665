//! The per-step LSE merge of context-parallel rings, two ways, on tensors of one ring step
//! (`[1, H, rows, 128]`): the cast-up / merge / cast-back of `merge_partials` that the engine used to
//! run every step, against the in-place `RunningMerge::add` (running result kept in f32, `mul_` +
//! `addcmul_`) it runs now. Throughput is output elements per second; the glue model charges the
//! first (3e + 10a) and the second (4a + e) bytes per element (46 vs 18 for bf16, 28 vs 20 for f32).
//!
//!   cargo bench --bench merge               # CPU; the CUDA group runs when a GPU is present

use std::time::Duration;

use attnbench::attn::acc_kind;
use attnbench::attn::merge::{merge_partials, RunningMerge};
use attnbench::sys::cuda::device_synchronize;
use attnbench::sys::{cuda_available, ensure_cuda_loaded};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tch::{Device, Kind, Tensor};

fn group(c: &mut Criterion, device: Device, heads: i64, rows: i64) {
    let sync = || {
        if let Device::Cuda(i) = device {
            let _ = device_synchronize(i);
        }
    };
    for kind in [Kind::Float, Kind::BFloat16] {
        let acc = acc_kind(kind);
        let shape = [1, heads, rows, 128];
        let dev = if device == Device::Cpu { "cpu" } else { "cuda" };
        let mut g = c.benchmark_group(format!("merge-{dev}-{kind:?}-1x{heads}x{rows}x128"));
        g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
        g.throughput(Throughput::Elements((heads * rows * 128) as u64));
        let part = Tensor::randn(shape, (kind, device));
        let part_lse = Tensor::randn([1, heads, rows], (acc, device));
        let mut out = Tensor::randn(shape, (kind, device));
        let mut lse = Tensor::randn([1, heads, rows], (acc, device));
        g.bench_function("cast-merge-cast", |b| {
            b.iter(|| {
                (out, lse) = merge_partials(&out, &lse, &part, &part_lse).expect("merge");
                sync();
            })
        });
        let mut running = RunningMerge::new(1, heads, rows, 128, kind, device).expect("running merge");
        g.bench_function("in-place (RunningMerge)", |b| {
            b.iter(|| {
                running.add(&part, &part_lse).expect("merge");
                sync();
            })
        });
        g.finish();
    }
}

fn merges(c: &mut Criterion) {
    group(c, Device::Cpu, 8, 4096);
    ensure_cuda_loaded();
    if cuda_available() {
        group(c, Device::Cuda(0), 64, 8192);
    }
}

criterion_group!(benches, merges);
criterion_main!(benches);
