// attnbench shim: the few libtorch calls tch 0.24 does not expose. Device-generic APIs only (the PyPI
// wheel ships no CUDA headers). Every function catches exceptions and returns 0 on success, 1 on error
// with the message copied into `err` (NUL-terminated, truncated to `errlen`).
//
// Tensors cross the boundary as `at::Tensor*` — the same handle tch uses — so Rust wraps results with
// `Tensor::from_ptr` and frees them with tch's destructor.

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/ops/_cudnn_attention_forward.h>
#include <ATen/ops/_efficient_attention_forward.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Event.h>

#include <atomic>

#include <cstring>
#include <exception>
#include <stdexcept>
#include <optional>
#include <string>

namespace {
void copy_err(const char* msg, char* err, size_t errlen) {
  if (err == nullptr || errlen == 0) return;
  std::strncpy(err, msg, errlen - 1);
  err[errlen - 1] = '\0';
}

template <typename F>
int guarded(char* err, size_t errlen, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    copy_err(e.what(), err, errlen);
  } catch (...) {
    copy_err("unknown C++ exception", err, errlen);
  }
  return 1;
}

std::optional<int64_t> opt_i64(int64_t v) { return v < 0 ? std::nullopt : std::optional<int64_t>(v); }

// Counting CPU allocator. libtorch keeps no statistics for host memory, so attnbench installs this in
// front of the default CPU allocator (c10::SetAllocator, higher priority) and reads the peak bytes of
// live tensors around a case, the way CUDA rows read the caching allocator's peak. Each allocation
// carries its size in a 64-byte header (keeping the allocator's 64-byte alignment), so freeing needs no
// lookup; the counters are two atomics. Tensors allocated before installation keep their own deleter.
// Not counted: code that calls c10::GetDefaultCPUAllocator() directly instead of the registered one.
struct CountingCpuAllocator final : public c10::Allocator {
  static constexpr size_t kHeader = 64;
  c10::Allocator* inner = nullptr;
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};

  static void release(void* p);

  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return inner->allocate(0);
    void* base = inner->raw_allocate(n + kHeader);
    *static_cast<size_t*>(base) = n;
    int64_t now = current.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &CountingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingCpuAllocator::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};

CountingCpuAllocator g_counting;

void CountingCpuAllocator::release(void* p) {
  if (p == nullptr) return;
  void* base = static_cast<char*>(p) - kHeader;
  g_counting.current.fetch_sub(static_cast<int64_t>(*static_cast<size_t*>(base)));
  g_counting.inner->raw_deallocate(base);
}
}  // namespace

extern "C" {

// Enables exactly the SDPA backends given (1 = on). FA3 is switched off so `flash` means FA2.
int ab_sdp_set(int flash, int mem_efficient, int math, int cudnn, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto& ctx = at::globalContext();
    ctx.setSDPUseFlash(flash != 0);
    ctx.setSDPUseMemEfficient(mem_efficient != 0);
    ctx.setSDPUseMath(math != 0);
    ctx.setSDPUseCuDNN(cudnn != 0);
    ctx.setSDPUseFA3(false);
  });
}

// Writes the current toggles as a 4-bit set: flash 1, mem_efficient 2, math 4, cudnn 8.
int ab_sdp_get(int* bits, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto& ctx = at::globalContext();
    *bits = (ctx.userEnabledFlashSDP() ? 1 : 0) | (ctx.userEnabledMemEfficientSDP() ? 2 : 0) |
            (ctx.userEnabledMathSDP() ? 4 : 0) | (ctx.userEnabledCuDNNSDP() ? 8 : 0);
  });
}

// TF32 for fp32 work on CUDA: cuBLAS matmuls and cuDNN (1 = allowed). torch 2.11's setters keep its
// legacy and new precision settings consistent (aten/src/ATen/Context.cpp: setAllowTF32CuBLAS sets
// float32_matmul_precision and setFloat32Precision(CUDA, MATMUL, ...) together); the getters check that.
int ab_tf32_set(int cublas, int cudnn, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto& ctx = at::globalContext();
    ctx.setAllowTF32CuBLAS(cublas != 0);
    ctx.setAllowTF32CuDNN(cudnn != 0);
  });
}

int ab_tf32_get(int* cublas, int* cudnn, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto& ctx = at::globalContext();
    *cublas = ctx.allowTF32CuBLAS() ? 1 : 0;
    *cudnn = ctx.allowTF32CuDNN() ? 1 : 0;
  });
}

// FlashAttention-2 varlen forward. q [total_q, H, D], k/v [total_k, Hkv, D], cu_* int32 [n+1].
// Window sizes < 0 mean "none". Outputs: out [total_q, H, D], lse (f32), rng_state, unused.
int ab_flash_varlen_fwd(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v, const at::Tensor* cu_q,
                        const at::Tensor* cu_k, int64_t max_q, int64_t max_k, double scale, int is_causal,
                        int64_t window_left, int64_t window_right, at::Tensor** out, at::Tensor** lse,
                        at::Tensor** rng_state, at::Tensor** unused, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto r = at::_flash_attention_forward(*q, *k, *v, *cu_q, *cu_k, max_q, max_k, 0.0, is_causal != 0, false, scale,
                                          opt_i64(window_left), opt_i64(window_right));
    *out = new at::Tensor(std::get<0>(r));
    *lse = new at::Tensor(std::get<1>(r));
    *rng_state = new at::Tensor(std::get<2>(r));
    *unused = new at::Tensor(std::get<3>(r));
  });
}

// Memory-efficient (xformers/CUTLASS) varlen forward. q [1, total_q, H, D], k/v [1, total_k, Hkv, D]
// (Hkv == H), cu_* int32. custom_mask_type: 0 none, 1 causal top-left, 2 causal bottom-right.
// window < 0 = none. Outputs: out, lse, philox seed, philox offset.
int ab_efficient_varlen_fwd(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v, const at::Tensor* cu_q,
                            const at::Tensor* cu_k, int64_t max_q, int64_t max_k, double scale,
                            int64_t custom_mask_type, int64_t window, at::Tensor** out, at::Tensor** lse,
                            at::Tensor** seed, at::Tensor** offset, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto r = at::_efficient_attention_forward(*q, *k, *v, std::nullopt, *cu_q, *cu_k, max_q, max_k, 0.0,
                                              custom_mask_type, true, scale, std::nullopt, opt_i64(window));
    *out = new at::Tensor(std::get<0>(r));
    *lse = new at::Tensor(std::get<1>(r));
    *seed = new at::Tensor(std::get<2>(r));
    *offset = new at::Tensor(std::get<3>(r));
  });
}

// cuDNN varlen forward (packed [total, H, D] with cum_seq_*). Outputs: out, lse, philox seed, offset.
int ab_cudnn_varlen_fwd(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v, const at::Tensor* cu_q,
                        const at::Tensor* cu_k, int64_t max_q, int64_t max_k, double scale, int is_causal,
                        at::Tensor** out, at::Tensor** lse, at::Tensor** seed, at::Tensor** offset, char* err,
                        size_t errlen) {
  return guarded(err, errlen, [&] {
    auto r = at::_cudnn_attention_forward(*q, *k, *v, std::nullopt, *cu_q, *cu_k, max_q, max_k, true, 0.0,
                                          is_causal != 0, false, scale);
    *out = new at::Tensor(std::get<0>(r));
    *lse = new at::Tensor(std::get<1>(r));
    *seed = new at::Tensor(std::get<6>(r));
    *offset = new at::Tensor(std::get<7>(r));
  });
}

// A timing-enabled CUDA event (BACKEND_DEFAULT: the default flag disables timing).
int ab_event_new(void** ev, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    *ev = new c10::Event(c10::DeviceType::CUDA, c10::EventFlag::BACKEND_DEFAULT);
  });
}

void ab_event_free(void* ev) { delete static_cast<c10::Event*>(ev); }

// Records on the current stream of `device`.
int ab_event_record(void* ev, int device, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    static_cast<c10::Event*>(ev)->record(at::accelerator::getCurrentStream(static_cast<c10::DeviceIndex>(device)));
  });
}

// Waits for `end`, then writes the milliseconds between `start` and `end`.
int ab_event_elapsed_ms(void* start, void* end, double* ms, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* e = static_cast<c10::Event*>(end);
    e->synchronize();
    *ms = static_cast<c10::Event*>(start)->elapsedTime(*e);
  });
}

int ab_device_synchronize(int device, char* err, size_t errlen) {
  return guarded(err, errlen, [&] { at::accelerator::synchronizeDevice(static_cast<c10::DeviceIndex>(device)); });
}

// Allocator statistics of `device` (aggregate pool): bytes allocated now and the peak since the last reset.
int ab_mem_stats(int device, int64_t* current, int64_t* peak, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto s = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    *current = s.allocated_bytes[0].current;
    *peak = s.allocated_bytes[0].peak;
  });
}

int ab_mem_reset_peak(int device, char* err, size_t errlen) {
  return guarded(err, errlen, [&] { at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device)); });
}

// Installs the counting allocator in front of the current CPU allocator (once; idempotent).
int ab_cpu_alloc_install(char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    static bool done = false;
    if (done) return;
    c10::Allocator* cur = c10::GetAllocator(c10::DeviceType::CPU);
    if (cur->raw_deleter() == nullptr) throw std::runtime_error("the CPU allocator has no raw deleter; cannot wrap it");
    g_counting.inner = cur;
    c10::SetAllocator(c10::DeviceType::CPU, &g_counting, /*priority=*/100);
    done = true;
  });
}

// Bytes of live CPU tensors now and the peak since the last reset (counting allocator).
int ab_cpu_mem_stats(int64_t* current, int64_t* peak, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    *current = g_counting.current.load();
    *peak = g_counting.peak.load();
  });
}

// Peak := current.
int ab_cpu_mem_reset_peak(char* err, size_t errlen) {
  return guarded(err, errlen, [&] { g_counting.peak.store(g_counting.current.load()); });
}

}  // extern "C"
