//! Every backend against the f64 reference on every zoo pattern it supports (small sizes), through the
//! same correctness gate the timer uses; `unsupported` answers; a deliberately wrong backend is caught.

use attnbench::attn::KernelError;
use attnbench::backend::{registry, Backend, Fwd, Inputs, Kernel};
use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::harness::kernel::execute_kernel_case_with;
use attnbench::mask::{build_pattern, Params, PATTERNS};
use attnbench::measure::MeasureSettings;
use attnbench::results::Status;
use tch::Tensor;

const S: usize = 96;

/// Small parameters for whichever keys a pattern declares (others keep their defaults).
fn small_params(keys: &[&str]) -> Params {
    let mut p = Params::new();
    for k in keys {
        p = match *k {
            "window" | "window_left" | "window_right" | "global" | "prefix" | "block" => p.set(k, 16),
            "doc_lens" => p.set(k, "30,18,40,8"),
            "density" => p.set(k, 0.5),
            "seed" => p.set(k, 3),
            _ => p,
        };
    }
    p
}

fn quick() -> MeasureSettings {
    MeasureSettings { warmup: 0, repeats: 1, ..Default::default() }
}

#[test]
fn every_cpu_backend_matches_reference_on_every_pattern() {
    let mut built = 0;
    let mut ok = 0;
    for pat in PATTERNS {
        let keys: Vec<&str> = pat.params.iter().map(|s| s.key).collect();
        let params = small_params(&keys);
        if let Err(e) = build_pattern(pat.name, S, &params) {
            eprintln!("pattern {} does not build at S={S} with {params}: {e}", pat.name);
            continue;
        }
        built += 1;
        for (dtype, pass, heads) in [
            (DType::Fp32, Pass::Fwd, HeadLayout { q: 4, kv: 4 }),
            (DType::Bf16, Pass::Fwdbwd, HeadLayout { q: 4, kv: 1 }),
            (DType::Fp32, Pass::Bwd, HeadLayout { q: 4, kv: 1 }),
        ] {
            for b in registry() {
                let case = Case::kernel(b.name(), pat.name, params.clone(), S, heads, 16, dtype, pass, DeviceKind::Cpu);
                let row = execute_kernel_case_with(*b, &case, &quick(), "t").unwrap();
                match row.status {
                    Status::Ok => {
                        ok += 1;
                        assert!(row.max_abs_err.is_some() && row.tflops.is_some(), "{}", case.label());
                    }
                    Status::Unsupported => assert!(!row.error.is_empty() && row.tflops.is_none()),
                    other => panic!("{}: {other} ({}; err {:?}; {})", case.label(), row.error, row.max_abs_err, row.note),
                }
            }
        }
    }
    assert!(built >= 2 && ok >= 5 * built, "built {built} patterns, {ok} ok rows");
}

#[test]
fn cuda_only_backends_answer_unsupported_on_cpu() {
    let case = |b: &str| Case::kernel(b, "causal", Params::new(), 64, HeadLayout { q: 2, kv: 2 }, 16, DType::Bf16, Pass::Fwd, DeviceKind::Cpu);
    for name in ["sdpa-efficient", "sdpa-cudnn", "flash-varlen", "efficient-varlen", "cudnn-varlen"] {
        let b = attnbench::backend::find_backend(name).unwrap();
        let masks = build_pattern("causal", 64, &Params::new()).unwrap();
        let why = b.supports(&case(name), &masks).unwrap_err();
        assert!(why.contains("CPU") || why.contains("CUDA"), "{name}: {why}");
        let row = attnbench::harness::kernel::execute_kernel_case(&case(name), &quick(), "t").unwrap();
        assert_eq!(row.status, Status::Unsupported);
        assert!(row.ms_median.is_none());
    }
    // A CUDA case without a GPU is an unsupported row, not a crash.
    if !attnbench::sys::cuda_available() {
        let mut c = case("sdpa-math");
        c.device = DeviceKind::Cuda;
        let row = attnbench::harness::kernel::execute_kernel_case(&c, &quick(), "t").unwrap();
        assert_eq!(row.status, Status::Unsupported);
    }
    // sdpa-flash on CUDA takes no attn_mask: document masks are unsupported there (answered up front).
    let mut c = Case::kernel(
        "sdpa-flash",
        "full_document",
        Params::new().set("doc_lens", "30,34"),
        64,
        HeadLayout { q: 2, kv: 2 },
        16,
        DType::Bf16,
        Pass::Fwd,
        DeviceKind::Cuda,
    );
    if let Ok(m) = build_pattern("full_document", 64, &c.params) {
        c.device = DeviceKind::Cuda;
        assert!(attnbench::backend::find_backend("sdpa-flash").unwrap().supports(&c, &m).is_err());
    }
}

/// Test-only backend: `naive` with its output scaled by 1.05 — the gate must reject it.
struct Wrong;
struct WrongKernel(Box<dyn Kernel>);

impl Backend for Wrong {
    fn name(&self) -> &'static str {
        "wrong"
    }
    fn summary(&self) -> &'static str {
        "deliberately wrong"
    }
    fn supports(&self, _c: &Case, _m: &attnbench::mask::HeadMasks) -> Result<(), String> {
        Ok(())
    }
    fn autograd(&self) -> bool {
        true
    }
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        Ok(Box::new(WrongKernel(attnbench::backend::naive::NAIVE.prepare(case, x)?)))
    }
}

impl Kernel for WrongKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError> {
        let f = self.0.forward(x)?;
        Ok(Fwd { out: f.out * 1.05, lse: None })
    }
    fn backward(&mut self, x: &Inputs, f: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        self.0.backward(x, f)
    }
    fn note(&self) -> String {
        "wrong".into()
    }
    fn cpu_bytes(&self, _x: &Inputs, _p: Pass) -> u64 {
        0
    }
}

#[test]
fn wrong_backend_is_caught_by_the_gate() {
    let case = Case::kernel("wrong", "causal", Params::new(), 80, HeadLayout { q: 4, kv: 2 }, 16, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
    let row = execute_kernel_case_with(&Wrong, &case, &quick(), "t").unwrap();
    assert_eq!(row.status, Status::Wrong);
    assert!(row.tflops.is_none() && row.ms_median.is_none());
    assert!(row.max_abs_err.unwrap() > 1e-3);
    // With the check off the same backend is timed (the gate is what caught it).
    let s = MeasureSettings { check: false, ..quick() };
    assert_eq!(execute_kernel_case_with(&Wrong, &case, &s, "t").unwrap().status, Status::Ok);
}

#[test]
fn bad_mask_parameters_are_errors_not_rows() {
    let case = Case::kernel("naive", "causal", Params::new().set("nonsense", 1), 64, HeadLayout { q: 2, kv: 2 }, 16, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
    assert!(attnbench::harness::kernel::execute_kernel_case(&case, &quick(), "t").is_err());
    let case = Case::kernel("naive", "no_such_mask", Params::new(), 64, HeadLayout { q: 2, kv: 2 }, 16, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
    assert!(attnbench::harness::kernel::execute_kernel_case(&case, &quick(), "t").is_err());
}
