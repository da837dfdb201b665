//! Memory before the killer. A kernel case that cannot fit must become an `oom` row — never a worker
//! grown until the system's OOM killer takes it (an `error` row, "signal 9", and no OOM-skip of the
//! longer lengths). Two layers:
//!
//! 1. **Estimate first, allocate never.** Before a case is sent to the worker, [`estimate`] gives a
//!    *lower bound* on the bytes it must allocate (inputs, outputs, gradients, the S×S score matrices of
//!    the backends that materialise them, the correctness gate's f64 copies and score rows). If even
//!    that exceeds what the worker may use, the case is an `oom` row quoting the estimate and nothing
//!    is allocated. A lower bound never refuses a case that would have fit; what it misses, layer 2
//!    catches.
//! 2. **A cap on the worker.** Before each case the runner sets the worker's soft `RLIMIT_DATA` (private
//!    writable memory: heap and anonymous mappings, not shared libraries or reserved-but-inaccessible
//!    address space, so libtorch's and OpenMP's reservations do not count the way they would under
//!    `RLIMIT_AS`) to what it holds now plus what it may still take ([`Allowance`]). Past the cap an
//!    allocation fails inside the worker: libtorch raises "DefaultCPUAllocator: can't allocate memory"
//!    (an `oom` row from the worker), Rust's allocator aborts with "memory allocation of N bytes
//!    failed" and C++ with `std::bad_alloc` (the worker dies with SIGABRT; [`is_allocation_failure`]
//!    reads its stderr and the runner writes an `oom` row).
//!
//! What the worker may use: `--mem-limit` when given, else the machine's available memory
//! (`MemAvailable`, and the cgroup's `memory.max − memory.current` when lower) minus a headroom of
//! max(256 MiB, 5 % of RAM) for the runner and the rest of the machine, taken again before each case.
//! On CUDA the estimate of device bytes is compared with the device's free memory as `nvidia-smi`
//! reports it, plus what the worker itself holds (its caching allocator's blocks are its to reuse).

use std::path::Path;

use crate::case::{Case, DeviceKind};
use crate::harness::gate::check_rows;
use crate::measure::MeasureSettings;

/// A lower bound on what one case allocates, split by where it lives, with the terms that make it up.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Host (CPU) bytes: everything for a CPU case; the correctness gate's f64 work for a CUDA case.
    pub host: u64,
    /// Device bytes (CUDA cases; 0 on CPU).
    pub device: u64,
    /// The terms, e.g. `inputs 1.0 GiB + out 256 MiB + scores 2×64.0 GiB + gate 1.5 GiB`.
    pub detail: String,
}

/// Backends whose call materialises B·Hq·S² scores in the input dtype, and how many such matrices are
/// alive at the same time at least (mirrors their `Kernel::cpu_bytes`; a unit test keeps the two
/// consistent): `naive` (and the test-only `fault-wrong`, which is `naive`) keep the scaled scores
/// and the masked scores (then the probabilities) alive; `sdpa-math` the scores and the weights.
fn dense_score_matrices(backend: &str) -> u64 {
    match backend {
        "naive" | "fault-wrong" | "sdpa-math" => 2,
        _ => 0,
    }
}

/// Backends that build a dense S×S mask: the boolean mask (1 byte per entry, per head group) and, for
/// `naive`, the additive bias in the input dtype.
fn dense_mask_bytes(backend: &str, case: &Case, groups: u64) -> u64 {
    let s2 = case.seqlen as u64 * case.seqlen as u64;
    match backend {
        "naive" | "fault-wrong" => groups * s2 * (1 + case.dtype.size() as u64),
        _ => 0,
    }
}

impl Estimate {
    /// The `oom` reason when the host part exceeds `allowance` (from [`host_allowance`], whose
    /// `source` it names); `who` is what may use it (`the worker`, `this process`).
    pub fn over_host(&self, allowance: u64, source: &str, who: &str) -> Option<String> {
        (self.host > allowance).then(|| {
            format!("not run: estimated peak ≥ {} of host memory ({}) exceeds the {} {who} may use ({source})", human(self.host), self.detail, human(allowance))
        })
    }

    /// The `oom` reason when the device part exceeds `free` bytes; `how` says how `free` was read.
    pub fn over_device(&self, free: u64, how: &str) -> Option<String> {
        (self.device > free).then(|| {
            format!(
                "not run: estimated peak ≥ {} of device memory ({}) exceeds the {} free on the device ({how})",
                human(self.device),
                self.detail,
                human(free)
            )
        })
    }
}

/// Lower bound on the bytes `case` allocates (see the module doc). `mask_groups` is the number of
/// distinct head-group masks (1 unless the pattern is per-head).
pub fn estimate(case: &Case, settings: &MeasureSettings, mask_groups: usize) -> Estimate {
    let (b, hq, hkv, s, d) = (case.batch as u128, case.heads.q as u128, case.heads.kv as u128, case.seqlen as u128, case.head_dim as u128);
    let elem = case.dtype.size() as u128;
    let q = b * hq * s * d * elem;
    let kv = b * hkv * s * d * elem;
    let mut terms: Vec<(&str, u128)> = vec![("inputs", 2 * q + 2 * kv), ("out", q)];
    if case.pass.includes_backward() {
        terms.push(("grads", q + 2 * kv));
    }
    let scores = dense_score_matrices(&case.backend) as u128 * b * hq * s * s * elem;
    if scores > 0 {
        terms.push(("scores", scores));
    }
    let mask = dense_mask_bytes(&case.backend, case, mask_groups.max(1) as u64) as u128;
    if mask > 0 {
        terms.push(("dense mask", mask));
    }
    let device_total: u128 = terms.iter().map(|t| t.1).sum();
    // The gate (CPU, f64): q, k, v copied to f64, and the reference's score rows (all rows, or the
    // subsample `check_rows` picks), at least one matrix of them.
    let mut gate = 0u128;
    if settings.check {
        let rows = check_rows(case.batch, case.heads.q, case.seqlen).map(|r| r.len() as u128).unwrap_or(s);
        gate = (b * hq * s * d + 2 * b * hkv * s * d) * 8 + b * hq * rows * s * 8;
        terms.push(("gate", gate));
    }
    let cap = |x: u128| x.min(u64::MAX as u128) as u64;
    let detail = terms.iter().map(|(n, v)| format!("{n} {}", human(cap(*v)))).collect::<Vec<_>>().join(" + ");
    match case.device {
        DeviceKind::Cpu => Estimate { host: cap(device_total + gate), device: 0, detail },
        DeviceKind::Cuda => Estimate { host: cap(gate), device: cap(device_total), detail },
    }
}

/// What the worker may allocate for the next case, and where that number comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    pub host: u64,
    /// `--mem-limit 2G`, or `available 21.3 GiB − headroom 1.2 GiB`.
    pub host_source: String,
    /// Free device memory for the worker, when known (CUDA cases with `nvidia-smi`).
    pub device: Option<u64>,
}

/// The host allowance: `limit` when the user gave one (`--mem-limit`), else available memory minus
/// the headroom. Read again before every case: other processes come and go during a night.
pub fn host_allowance(limit: Option<u64>) -> (u64, String) {
    if let Some(l) = limit {
        return (l, format!("--mem-limit {}", human(l)));
    }
    let avail = available_host_bytes();
    let head = headroom();
    (avail.saturating_sub(head), format!("available {} − headroom {}", human(avail), human(head)))
}

/// max(256 MiB, 5 % of RAM): left for the runner, the page cache and everything else on the machine.
pub fn headroom() -> u64 {
    (meminfo("MemTotal:").unwrap_or(0) / 20).max(256 << 20)
}

/// `MemAvailable`, lowered to the cgroup's remaining `memory.max` when that is smaller.
pub fn available_host_bytes() -> u64 {
    let avail = meminfo("MemAvailable:").unwrap_or(u64::MAX);
    avail.min(cgroup_remaining().unwrap_or(u64::MAX))
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

/// The least room left under any memory limit of this process's cgroups (the leaf and every ancestor:
/// Slurm and container runtimes often set the limit on a parent), cgroup v2 (`memory.max −
/// memory.current`) or v1 (`memory.limit_in_bytes − memory.usage_in_bytes`); `None` without a limit.
fn cgroup_remaining() -> Option<u64> {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_remaining_at(Path::new("/sys/fs/cgroup"), &proc_cgroup)
}

/// The memory cgroup folders of this process, leaf first, up to the mount root; and whether they are v1.
fn cgroup_chain(root: &Path, proc_cgroup: &str) -> Vec<(std::path::PathBuf, bool)> {
    // v1: `N:memory:/path` (the controller may share a line, `N:cpu,memory:/path`); v2: `0::/path`.
    let v1 = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
        ctl.split(',').any(|c| c == "memory").then(|| path.to_string())
    });
    let (base, rel, is_v1) = match v1 {
        Some(p) => (root.join("memory"), p, true),
        None => match proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
            Some(p) => (root.to_path_buf(), p.to_string(), false),
            None => return Vec::new(),
        },
    };
    let mut dir = base.join(rel.trim().trim_start_matches('/'));
    let mut out = Vec::new();
    loop {
        out.push((dir.clone(), is_v1));
        if dir == base || !dir.pop() || !dir.starts_with(&base) {
            break;
        }
    }
    out
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok()
}

/// [`cgroup_remaining`] under `root` (a test can point it at a fake tree). v1's "no limit" is a huge
/// number (page-rounded `i64::MAX`): limits ≥ 2^60 count as none.
fn cgroup_remaining_at(root: &Path, proc_cgroup: &str) -> Option<u64> {
    cgroup_chain(root, proc_cgroup)
        .into_iter()
        .filter_map(|(dir, v1)| {
            let (lim, cur) = if v1 { ("memory.limit_in_bytes", "memory.usage_in_bytes") } else { ("memory.max", "memory.current") };
            let max = read_u64(&dir.join(lim)).filter(|&m| m < 1 << 60)?;
            Some(max.saturating_sub(read_u64(&dir.join(cur)).unwrap_or(0)))
        })
        .min()
}

/// How many processes the kernel's OOM killer has killed for this process's memory cgroups (leaf and
/// ancestors, `oom_kill` of v2 `memory.events` or v1 `memory.oom_control`), summed: a rise across a
/// case whose worker died of SIGKILL means the cgroup's limit killed it — an `oom`, not an `error`.
pub fn cgroup_oom_kills() -> Option<u64> {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_oom_kills_at(Path::new("/sys/fs/cgroup"), &proc_cgroup)
}

fn cgroup_oom_kills_at(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let counts: Vec<u64> = cgroup_chain(root, proc_cgroup)
        .into_iter()
        .filter_map(|(dir, v1)| {
            let text = std::fs::read_to_string(dir.join(if v1 { "memory.oom_control" } else { "memory.events" })).ok()?;
            text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse::<u64>().ok())
        })
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// The worker's current private writable memory (`VmData`), what `RLIMIT_DATA` counts.
pub fn vm_data(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmData:"))?;
    line["VmData:".len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Sets the worker's soft `RLIMIT_DATA` to what it holds now plus `extra` bytes (its hard limit stays
/// as inherited). Fails only if the process is gone or not ours.
pub fn cap_worker(pid: u32, extra: u64) -> std::io::Result<u64> {
    let now = vm_data(pid).ok_or_else(|| std::io::Error::other(format!("cannot read /proc/{pid}/status")))?;
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit with valid pointers on our own child.
    if unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_DATA, std::ptr::null(), &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let soft = now.saturating_add(extra).min(old.rlim_max);
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    if unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_DATA, &new, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(soft)
}

/// Free memory of the CUDA device the worker uses (the first visible one) plus what the worker holds
/// there, from `nvidia-smi`; `None` when it cannot be asked (no `nvidia-smi`, no GPU).
pub fn device_free_for(worker_pid: u32) -> Option<u64> {
    let id = std::env::var("CUDA_VISIBLE_DEVICES").ok().and_then(|v| v.split(',').next().map(|s| s.trim().to_string())).filter(|s| !s.is_empty());
    let id = id.unwrap_or_else(|| "0".into());
    let q = |args: &[&str]| -> Option<String> {
        let o = std::process::Command::new("nvidia-smi").args(args).arg(format!("--id={id}")).arg("--format=csv,noheader,nounits").output().ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let free_mib: u64 = q(&["--query-gpu=memory.free"])?.trim().parse().ok()?;
    let mine_mib: u64 = q(&["--query-compute-apps=pid,used_memory"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(pid, _)| pid.trim() == worker_pid.to_string())
        .filter_map(|(_, used)| used.trim().parse::<u64>().ok())
        .sum();
    Some((free_mib + mine_mib) << 20)
}

/// Whether a dead worker's stderr says it died of an allocation failure: Rust's allocator abort,
/// C++'s `std::bad_alloc`, or libtorch's CPU allocator message escaping as an uncaught exception.
pub fn is_allocation_failure(stderr: &str) -> bool {
    stderr.lines().any(|l| (l.contains("memory allocation of") && l.contains("failed")) || l.contains("std::bad_alloc") || l.contains("can't allocate memory"))
}

/// The line of an allocation failure in a worker's stderr, for the row's `error`.
pub fn allocation_failure_line(stderr: &str) -> Option<String> {
    stderr.lines().find(|l| is_allocation_failure(l)).map(|l| l.trim().to_string())
}

/// `1.5 GiB`, `256 MiB`, `12 KiB`, `17 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a byte count: `1073741824`, `512M`, `2G`, `1.5GiB`, `64k` (binary multiples).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("expected a byte count like 512M or 2G, got `{s}`"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown unit in `{s}` (expected K, M, G or T)")),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 1.0 {
        return Err(format!("must be at least 1 byte, got `{s}`"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{find_backend, Inputs};
    use crate::case::{DType, HeadLayout};
    use crate::flops::Pass;
    use crate::mask::{build_pattern, Params};

    fn case(backend: &str, s: usize, pass: Pass) -> Case {
        Case::kernel(backend, "causal", Params::new(), s, HeadLayout { q: 4, kv: 2 }, 16, DType::Fp32, pass, DeviceKind::Cpu)
    }

    #[test]
    fn the_issue_case_is_refused_by_its_scores_alone() {
        // naive at S = 65536, 4:2 fp32: one score matrix is 4 · 65536² · 4 B = 64 GiB.
        let e = estimate(&case("naive", 65536, Pass::Fwd), &MeasureSettings::default(), 1);
        assert!(e.host >= 2 * (64u64 << 30), "{e:?}");
        assert!(e.detail.contains("scores 128.0 GiB"), "{}", e.detail);
        // A fused backend at the same size needs only its inputs, outputs and the gate.
        let f = estimate(&case("sliced", 65536, Pass::Fwd), &MeasureSettings { check: false, ..Default::default() }, 1);
        assert_eq!(f.host, 3 * 4 * 65536 * 16 * 4 + 2 * 2 * 65536 * 16 * 4);
    }

    /// The estimate's score term must stay a lower bound of what the backends themselves count
    /// (`Kernel::cpu_bytes`), for every backend the estimate knows materialises scores.
    #[test]
    fn score_term_is_below_the_backends_own_count() {
        for backend in ["naive", "sdpa-math"] {
            for pass in [Pass::Fwd, Pass::Fwdbwd] {
                let c = case(backend, 64, pass);
                let masks = build_pattern("causal", 64, &Params::new()).unwrap();
                let b = find_backend(backend).unwrap();
                let x = Inputs::new(&c, masks.clone(), 1, b.autograd() && pass.includes_backward()).unwrap();
                let k = b.prepare(&c, &x).unwrap();
                let no_gate = MeasureSettings { check: false, ..Default::default() };
                let e = estimate(&c, &no_gate, 1);
                let inputs = x.bytes();
                assert!(e.host - inputs <= k.cpu_bytes(&x, pass) + dense_mask_bytes(backend, &c, 1), "{backend} {pass}: {e:?} vs {}", k.cpu_bytes(&x, pass));
                assert!(e.detail.contains("scores"), "{backend}: {}", e.detail);
            }
        }
    }

    /// A fake cgroup tree: the limit sits on an ancestor of the process's cgroup (as Slurm and
    /// container runtimes set it), in v2 and in v1 layout.
    #[test]
    fn the_cgroup_limit_of_an_ancestor_is_read_in_v1_and_v2() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let w = |p: &str, v: &str| {
            let f = r.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, v).unwrap();
        };
        // v2: job limit 8 GiB with 3 GiB used on the parent, the leaf (step) has no limit.
        w("slurm/job_1/memory.max", &format!("{}\n", 8u64 << 30));
        w("slurm/job_1/memory.current", &format!("{}\n", 3u64 << 30));
        w("slurm/job_1/step_0/memory.max", "max\n");
        w("slurm/job_1/step_0/memory.current", "1000\n");
        w("slurm/job_1/memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        w("slurm/job_1/step_0/memory.events", "oom_kill 0\n");
        assert_eq!(cgroup_remaining_at(r, "0::/slurm/job_1/step_0\n"), Some(5 << 30));
        assert_eq!(cgroup_oom_kills_at(r, "0::/slurm/job_1/step_0\n"), Some(1));
        // v1: the memory controller's line, limit on the job, "unlimited" on the step.
        w("memory/slurm/uid_0/job_2/memory.limit_in_bytes", &format!("{}\n", 4u64 << 30));
        w("memory/slurm/uid_0/job_2/memory.usage_in_bytes", &format!("{}\n", 1u64 << 30));
        w("memory/slurm/uid_0/job_2/step_0/memory.limit_in_bytes", "9223372036854771712\n");
        w("memory/slurm/uid_0/job_2/step_0/memory.usage_in_bytes", "0\n");
        w("memory/slurm/uid_0/job_2/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        let v1 = "12:pids:/slurm/uid_0/job_2\n4:memory:/slurm/uid_0/job_2/step_0\n1:name=systemd:/x\n";
        assert_eq!(cgroup_remaining_at(r, v1), Some(3 << 30));
        assert_eq!(cgroup_oom_kills_at(r, v1), Some(2));
        // No limit anywhere: none.
        assert_eq!(cgroup_remaining_at(r, "0::/nolimit\n"), None);
    }

    #[test]
    fn byte_counts_parse_and_print() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5X").is_err());
        assert!(parse_bytes("0").is_err());
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(17), "17 B");
    }

    #[test]
    fn allocation_failures_are_recognised_in_stderr() {
        assert!(is_allocation_failure("memory allocation of 68719476736 bytes failed\nstack backtrace:"));
        assert!(is_allocation_failure("terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc"));
        assert!(!is_allocation_failure("thread 'main' panicked at src/x.rs:1: index out of bounds"));
        assert_eq!(allocation_failure_line("x\nmemory allocation of 8 bytes failed\n").unwrap(), "memory allocation of 8 bytes failed");
    }

    #[test]
    fn the_worker_cap_is_applied_to_a_child() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        // Until it has exec'ed, the child is a copy of this test process and its VmData is ours.
        let comm = format!("/proc/{}/comm", child.id());
        for _ in 0..500 {
            if std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // After the exec the dynamic loader still maps libraries for a moment (VmData grows by a few
        // hundred KiB): wait until it holds still, so the cap is taken from the settled size.
        let mut last = vm_data(child.id()).unwrap();
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let now = vm_data(child.id()).unwrap();
            if now == last {
                break;
            }
            last = now;
        }
        let soft = cap_worker(child.id(), 64 << 20).unwrap();
        let now = vm_data(child.id()).unwrap();
        assert_eq!(soft, now + (64 << 20));
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max data size")).unwrap();
        assert!(line.contains(&soft.to_string()), "{line}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
