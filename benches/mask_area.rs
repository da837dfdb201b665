//! Build + exact area of million-token masks: the range model must stay O(#slices).
//!
//! - `causal_document` at 1,048,576 tokens with 10,000 documents of near-equal length (104 or 105
//!   tokens), given as `doc_lens` (so parameter parsing, slice building, the overlap check and the area
//!   are all timed);
//! - `sliding_window` (±1024) at 1,048,576 tokens (three slices);
//! - `causal_document` with lengths sampled from prolong512k at 1M tokens (Sampler A included).

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use attnbench::mask::{build_pattern, Params};

const S: usize = 1 << 20;

fn equal_docs(n: usize) -> Params {
    let lens: Vec<String> = (0..n).map(|d| (S / n + usize::from(d < S % n)).to_string()).collect();
    Params::new().set("doc_lens", lens.join(","))
}

fn bench(c: &mut Criterion) {
    let docs = equal_docs(10_000);
    c.bench_function("causal_document 1M tokens, 10k docs: build + area", |b| {
        b.iter(|| {
            let m = build_pattern("causal_document", black_box(S), &docs).unwrap();
            black_box(m.groups[0].area())
        })
    });
    let built = build_pattern("causal_document", S, &docs).unwrap();
    c.bench_function("causal_document 1M tokens, 10k docs: area only", |b| b.iter(|| black_box(&built).groups[0].area()));
    let sw = Params::new();
    c.bench_function("sliding_window 1M tokens (±1024): build + area", |b| {
        b.iter(|| {
            let m = build_pattern("sliding_window", black_box(S), &sw).unwrap();
            black_box(m.groups[0].area())
        })
    });
    let sampled = Params::new().set("docs", "prolong512k");
    c.bench_function("causal_document 1M tokens, prolong512k sampled: build + area", |b| {
        b.iter(|| {
            let m = build_pattern("causal_document", black_box(S), &sampled).unwrap();
            black_box(m.groups[0].area())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
