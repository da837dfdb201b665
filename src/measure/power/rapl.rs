//! Linux RAPL package energy (CPU cases): `/sys/class/powercap/intel-rapl:N/energy_uj`, a cumulative
//! µJ counter per CPU package (the kernel's `intel_rapl` driver also serves AMD packages under this
//! name). Each counter wraps at its `max_energy_range_uj`; a reading smaller than the previous one is
//! one wrap (the period between readings, 15 ms, is far below the minutes a wrap takes).
//!
//! What it measures: the whole package (all cores, uncore; not DRAM, which is the sub-zone
//! `intel-rapl:N:1` and left out), for every process on it — on a busy machine more than the case's
//! own energy, which docs/ENERGY.md says. Reading `energy_uj` needs root on kernels patched for
//! CVE-2020-8694; where it cannot be read the source is not opened and rows say `unavailable`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{PowerSample, PowerSource};

/// Where the kernel exposes RAPL.
pub const POWERCAP: &str = "/sys/class/powercap";

struct Zone {
    energy: PathBuf,
    /// The counter's wrap point, µJ (0 when the file is missing: a wrap is then not undone).
    max_uj: u64,
    last_uj: u64,
    /// Energy since the source opened, µJ, wraps undone.
    total_uj: u64,
}

/// Sum of the package zones' counters.
pub struct Rapl {
    zones: Vec<Zone>,
    origin: Instant,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Rapl {
    /// Opens every package zone (`intel-rapl:N`, one colon) under `root` whose counter reads as a
    /// number; `None` when there is none.
    pub fn open(root: &Path) -> Option<Rapl> {
        let mut zones = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(root).ok()?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        for name in names.into_iter().filter(|n| n.starts_with("intel-rapl:") && n.matches(':').count() == 1) {
            let dir = root.join(&name);
            let energy = dir.join("energy_uj");
            if let Some(v) = read_u64(&energy) {
                zones.push(Zone { energy, max_uj: read_u64(&dir.join("max_energy_range_uj")).unwrap_or(0), last_uj: v, total_uj: 0 });
            }
        }
        (!zones.is_empty()).then(|| Rapl { zones, origin: Instant::now() })
    }
}

impl PowerSource for Rapl {
    fn name(&self) -> &'static str {
        "rapl"
    }
    fn sample(&mut self) -> Option<PowerSample> {
        let t_ms = self.origin.elapsed().as_secs_f64() * 1e3;
        let mut sum = 0u64;
        for z in &mut self.zones {
            let v = read_u64(&z.energy)?;
            let delta = if v >= z.last_uj { v - z.last_uj } else { (z.max_uj.saturating_sub(z.last_uj)) + v };
            z.last_uj = v;
            z.total_uj += delta;
            sum += z.total_uj;
        }
        Some(PowerSample { t_ms, energy_mj: Some(sum as f64 / 1e3), ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, name: &str, uj: u64, max: u64) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
    }

    #[test]
    fn packages_are_summed_subzones_ignored_and_wraps_undone() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), "intel-rapl:0", 1_000_000, 10_000_000);
        zone(dir.path(), "intel-rapl:1", 500_000, 10_000_000);
        zone(dir.path(), "intel-rapl:0:0", 7, 10_000_000); // core sub-zone: part of package 0 already
        let mut r = Rapl::open(dir.path()).unwrap();
        assert_eq!(r.zones.len(), 2);
        assert_eq!(r.sample().unwrap().energy_mj, Some(0.0));
        zone(dir.path(), "intel-rapl:0", 3_000_000, 10_000_000);
        zone(dir.path(), "intel-rapl:1", 1_500_000, 10_000_000);
        assert_eq!(r.sample().unwrap().energy_mj, Some(3_000.0));
        // Package 0 wraps: 1 J up to its 4 J range, then 1 J after the wrap.
        zone(dir.path(), "intel-rapl:0", 1_000_000, 4_000_000);
        r.zones[0].max_uj = 4_000_000;
        assert_eq!(r.sample().unwrap().energy_mj, Some(3_000.0 + 2_000.0));
    }

    #[test]
    fn unreadable_or_absent_rapl_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Rapl::open(dir.path()).is_none(), "no zones");
        assert!(Rapl::open(&dir.path().join("missing")).is_none(), "no powercap folder");
        std::fs::create_dir_all(dir.path().join("intel-rapl:0")).unwrap();
        std::fs::write(dir.path().join("intel-rapl:0/energy_uj"), "").unwrap();
        assert!(Rapl::open(dir.path()).is_none(), "a counter that does not read as a number");
    }
}
