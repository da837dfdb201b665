//! The peak-memory rule (src/measure/memory.rs), the same for every backend: the inputs are excluded,
//! everything the backend allocates for its call is included — what `prepare` keeps (packed copies,
//! repeated K/V, dense masks) and what the call allocates. One test function: the counting CPU
//! allocator is process-wide, so nothing else may allocate in this process while it measures.

use attnbench::attn::KernelError;
use attnbench::backend::{naive::NAIVE, Backend, Fwd, Inputs, Kernel};
use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::harness::kernel::execute_kernel_case_with;
use attnbench::mask::Params;
use attnbench::measure::MeasureSettings;
use attnbench::results::Status;
use tch::Tensor;

/// `naive`, but its `prepare` keeps `kept` bytes alive (like a packed copy of the inputs) and briefly
/// allocates `scratch` bytes more (like a layout conversion whose temporary is freed before returning).
struct Preparing {
    kept: i64,
    scratch: i64,
}
struct PreparingKernel(Box<dyn Kernel>, #[allow(dead_code)] Tensor);

impl Backend for Preparing {
    fn name(&self) -> &'static str {
        "preparing"
    }
    fn summary(&self) -> &'static str {
        "naive with allocations in prepare"
    }
    fn supports(&self, _c: &Case, _m: &attnbench::mask::HeadMasks) -> Result<(), String> {
        Ok(())
    }
    fn autograd(&self) -> bool {
        true
    }
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        let kept = Tensor::ones([self.kept], (tch::Kind::Uint8, tch::Device::Cpu));
        let scratch = Tensor::ones([self.scratch], (tch::Kind::Uint8, tch::Device::Cpu));
        drop(scratch);
        Ok(Box::new(PreparingKernel(NAIVE.prepare(case, x)?, kept)))
    }
}

impl Kernel for PreparingKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError> {
        self.0.forward(x)
    }
    fn backward(&mut self, x: &Inputs, f: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        self.0.backward(x, f)
    }
    fn note(&self) -> String {
        "preparing".into()
    }
    fn cpu_bytes(&self, _x: &Inputs, _p: Pass) -> u64 {
        0
    }
}

#[test]
fn peak_memory_counts_what_prepare_keeps_and_its_own_peak_but_not_the_inputs() {
    let settings = MeasureSettings { warmup: 0, repeats: 1, ..Default::default() };
    let case = |b: &str| Case::kernel(b, "causal", Params::new(), 128, HeadLayout { q: 4, kv: 2 }, 32, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
    let naive = execute_kernel_case_with(&NAIVE, &case("naive"), &settings, "t").unwrap();
    assert_eq!(naive.status, Status::Ok, "{}", naive.note);
    let call_peak = naive.peak_mem_bytes.expect("measured");
    // Inputs excluded: q, k, v alone are 128·32·(4+2+2)·4 B = 128 KiB; naive's call needs S² scores
    // per head at least, so its figure is its own work, not the inputs (exact value not asserted).
    assert!(call_peak > 0);

    // What prepare keeps is added to the call's peak.
    let kept = 8 << 20;
    let row = execute_kernel_case_with(&Preparing { kept, scratch: 0 }, &case("preparing"), &settings, "t").unwrap();
    assert_eq!(row.status, Status::Ok, "{}", row.note);
    let got = row.peak_mem_bytes.unwrap();
    assert!(got >= call_peak + kept as u64, "kept bytes not counted: {got} < {call_peak} + {kept}");
    assert!(got < call_peak + kept as u64 + (2 << 20), "more than kept + call: {got}");

    // A temporary of prepare larger than everything else is the peak.
    let scratch = 64 << 20;
    let row = execute_kernel_case_with(&Preparing { kept: 0, scratch }, &case("preparing"), &settings, "t").unwrap();
    assert!(row.peak_mem_bytes.unwrap() >= scratch as u64, "prepare's own peak not counted: {:?}", row.peak_mem_bytes);
}
