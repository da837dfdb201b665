//! Power of a CP case (issue 33): every rank samples its own device around the timed repeats, and the
//! row gets the sum over devices — each device counted once.
//!
//! Which ranks count ([`counts`]): on GPUs the first rank on each GPU (local rank < GPUs on the host:
//! ranks share GPUs round-robin, see `cp::local_device_index`); on CPUs the first rank on each host
//! (local rank 0: a RAPL package counter already covers every rank on it). Ranks that do not count
//! read nothing. If a counting rank has no power source or no energy figure, or the counting ranks
//! read different sources, the row's power columns stay empty: a partial sum would read as the job's
//! power and is not.

use tch::Device;

use crate::cp::comm::{Comm, ReduceOp};
use crate::cp::CpError;
use crate::measure::power::{source_for, PowerReading, PowerSource, Unavailable, LIMITING_REASONS};

/// This rank's local rank on its host: the communicator's rank for the in-process (`local`)
/// communicator, else LOCAL_RANK / OMPI_COMM_WORLD_LOCAL_RANK / SLURM_LOCALID, else the world rank
/// (as if every rank were on one host: a device is then never counted twice).
fn local_rank(comm: &dyn Comm) -> usize {
    if comm.backend_name() == "local" {
        return comm.rank();
    }
    ["LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"].iter().find_map(|v| std::env::var(v).ok()?.parse().ok()).unwrap_or(comm.rank())
}

/// Whether a rank with `local_rank` counts in the sum: on a GPU (`gpus` CUDA devices on its host)
/// the first rank on each GPU, on the CPU the first rank on the host.
pub fn counts(cuda: bool, local_rank: usize, gpus: usize) -> bool {
    if cuda {
        local_rank < gpus.max(1)
    } else {
        local_rank == 0
    }
}

/// The source this rank samples and whether it counts: its device's source when it counts (which
/// may be `unavailable`), nothing otherwise.
pub fn rank_source(comm: &dyn Comm, dev: Device) -> (Box<dyn PowerSource>, bool) {
    let cuda = matches!(dev, Device::Cuda(_));
    let gpus = if cuda { tch::Cuda::device_count().max(1) as usize } else { 1 };
    if counts(cuda, local_rank(comm), gpus) {
        (source_for(dev), true)
    } else {
        (Box::new(Unavailable), false)
    }
}

fn code(source: &str) -> f64 {
    match source {
        "nvml" => 2.0,
        "rapl" => 1.0,
        _ => 0.0,
    }
}

/// The job's reading from every rank's own (collective: every rank calls it; `counting` from
/// [`rank_source`]): power summed over the counting ranks, the lowest SM clock, every throttle reason
/// any rank saw.
pub fn sum_over_ranks(comm: &dyn Comm, mine: &PowerReading, counting: bool) -> Result<PowerReading, CpError> {
    let max = |x: f64| comm.all_reduce_f64(x, ReduceOp::Max);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let n = comm.all_reduce_f64(flag(counting), ReduceOp::Sum)?;
    // Codes of the counting ranks' sources: highest and lowest (0 = unavailable).
    let (hi, lo) = (max(if counting { code(mine.source) } else { 0.0 })?, -max(if counting { -code(mine.source) } else { -3.0 })?);
    let missing = max(flag(counting && mine.avg_power_w.is_none()))? > 0.0;
    let power = comm.all_reduce_f64(if counting { mine.avg_power_w.unwrap_or(0.0) } else { 0.0 }, ReduceOp::Sum)?;
    const NONE: f64 = -1e300;
    let neg_sm = max(mine.sm_clock_mhz.filter(|_| counting).map(|c| -c).unwrap_or(NONE))?;
    let mut throttle = 0u64;
    for (bit, _) in LIMITING_REASONS {
        if max(flag(mine.throttle & bit != 0))? > 0.0 {
            throttle |= bit;
        }
    }
    let clock_drop = max(flag(mine.clock_drop))? > 0.0;
    let (source, why_empty) = if n == 0.0 || hi == 0.0 {
        ("unavailable", "no power source on any rank".to_string())
    } else if lo == 0.0 {
        ("unavailable", "a rank has no power source; a sum over the others would not be the job's power".to_string())
    } else if hi != lo {
        ("unavailable", "the ranks read different power sources; not summed".to_string())
    } else if missing {
        (if hi == 2.0 { "nvml" } else { "rapl" }, "a rank had no energy figure (too short or unreadable); the sum over ranks is left empty".to_string())
    } else {
        (if hi == 2.0 { "nvml" } else { "rapl" }, String::new())
    };
    let avg = (why_empty.is_empty()).then_some(power);
    Ok(PowerReading {
        source,
        samples: mine.samples,
        interval_s: mine.interval_s,
        energy_j: avg.map(|w| w * mine.interval_s),
        method: mine.method,
        counter_j: None,
        integrated_j: None,
        avg_power_w: avg,
        sm_clock_mhz: (neg_sm > NONE / 2.0).then_some(-neg_sm),
        mem_clock_mhz: None,
        max_temp_c: None,
        throttle,
        clock_drop,
        why_empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::comm::local::LocalWorld;
    use crate::measure::power::testing::at;

    fn reading(source: &'static str, w: f64, sm: f64, throttle: u64) -> PowerReading {
        let mut s = vec![at(0.0, w, sm), at(100.0, w, sm)];
        s[1].throttle = throttle;
        PowerReading::of(source, &s)
    }

    #[test]
    fn power_is_summed_over_counting_ranks_and_throttling_of_any_rank_shows() {
        let out = LocalWorld::run(3, |c| {
            // Ranks 0, 1 on GPUs at 300 / 500 W; rank 2 shares a GPU and does not count.
            let mine = match c.rank() {
                0 => reading("nvml", 300.0, 1980.0, 0),
                1 => reading("nvml", 500.0, 1800.0, 0x20),
                _ => reading("unavailable", 0.0, 0.0, 0),
            };
            sum_over_ranks(c, &mine, c.rank() < 2).unwrap()
        });
        for r in &out {
            assert_eq!(r.source, "nvml");
            assert!((r.avg_power_w.unwrap() - 800.0).abs() < 1e-9, "{:?}", r.avg_power_w);
            assert_eq!(r.sm_clock_mhz, Some(1800.0), "the lowest rank's clock");
            assert_eq!(r.throttle_text(), "sw_thermal");
        }
    }

    #[test]
    fn a_rank_without_a_figure_leaves_the_sum_empty() {
        let out = LocalWorld::run(2, |c| {
            let mine = if c.rank() == 0 { reading("nvml", 300.0, 1980.0, 0) } else { PowerReading::of("nvml", &[at(0.0, 1.0, 1.0)]) };
            sum_over_ranks(c, &mine, true).unwrap()
        });
        assert_eq!(out[0].avg_power_w, None);
        assert!(out[0].why_empty.contains("a rank had no energy figure"), "{}", out[0].why_empty);
        let none = LocalWorld::run(2, |c| sum_over_ranks(c, &PowerReading::of("unavailable", &[]), c.rank() == 0).unwrap());
        assert_eq!((none[0].source, none[0].avg_power_w, none[0].sm_clock_mhz), ("unavailable", None, None));
        // A counting rank without a source (no NVML on its host): no partial sum.
        let partial = LocalWorld::run(2, |c| sum_over_ranks(c, &reading(if c.rank() == 0 { "nvml" } else { "unavailable" }, 100.0, 1.0, 0), true).unwrap());
        assert_eq!((partial[0].source, partial[0].avg_power_w), ("unavailable", None));
        assert!(partial[0].why_empty.contains("a rank has no power source"), "{}", partial[0].why_empty);
        let mixed = LocalWorld::run(2, |c| sum_over_ranks(c, &reading(if c.rank() == 0 { "nvml" } else { "rapl" }, 100.0, 1.0, 0), true).unwrap());
        assert_eq!((mixed[1].source, mixed[1].avg_power_w), ("unavailable", None));
    }

    /// A CP case on the CPU through the harness: the row names its power source (here, without
    /// RAPL, `unavailable` with empty columns) and the case is still `ok`.
    #[test]
    fn a_cp_row_says_where_its_power_came_from() {
        use crate::case::HeadLayout;
        use crate::flops::Pass;
        use crate::harness::cp::{run_case, CpSpec};
        use crate::measure::MeasureSettings;
        let settings = MeasureSettings { warmup: 0, repeats: 2, check: false, seed: 7, ..Default::default() };
        let sp = CpSpec::new(crate::cp::setup::fixtures::cp_case("ring-p2p", "causal", &[], 32, 2, HeadLayout { q: 4, kv: 4 }, Pass::Fwd), settings);
        let rows = LocalWorld::run(2, move |c| run_case(c, &sp, "t", "cpu").map_err(|e| format!("{e:?}")));
        let row = rows.into_iter().next().unwrap().expect("case ran").expect("rank 0 has the row");
        assert_eq!(row.status, crate::results::Status::Ok, "{}", row.error);
        let expected =
            if crate::measure::power::rapl::Rapl::open(std::path::Path::new(crate::measure::power::rapl::POWERCAP)).is_some() { "rapl" } else { "unavailable" };
        assert_eq!(row.power_source, expected);
        if expected == "unavailable" {
            assert_eq!((row.avg_power_w, row.energy_j, row.tflops_per_watt), (None, None, None));
        }
    }

    #[test]
    fn each_device_counts_once() {
        assert!(counts(true, 0, 8) && counts(true, 7, 8) && !counts(true, 8, 8));
        assert!(counts(false, 0, 1) && !counts(false, 1, 1));
    }
}
