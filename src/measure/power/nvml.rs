//! NVML, opened at run time (`dlopen("libnvidia-ml.so.1")` through `libloading`), so attnbench builds
//! and runs without the driver: where the library or a device is missing, [`NvmlSource::open`] gives
//! `None` and the row says `unavailable`.
//!
//! Signatures and units as declared in nvml.h (CUDA 11.x–13.x, unchanged across them):
//! - `nvmlReturn_t nvmlInit_v2(void)`; `nvmlDeviceGetCount_v2(unsigned int*)`;
//!   `nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t*)`;
//!   `nvmlDeviceGetHandleByUUID(const char*, nvmlDevice_t*)`;
//! - `nvmlDeviceGetPowerUsage(nvmlDevice_t, unsigned int* power)` — mW (on Ampere and newer an average
//!   over ~1 s, which is why the energy counter is preferred);
//! - `nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t, unsigned long long* energy)` — mJ since the
//!   driver was loaded (Volta and newer);
//! - `nvmlDeviceGetClockInfo(nvmlDevice_t, nvmlClockType_t, unsigned int* clock)` — MHz; type
//!   `NVML_CLOCK_SM` = 1, `NVML_CLOCK_MEM` = 2;
//! - `nvmlDeviceGetTemperature(nvmlDevice_t, nvmlTemperatureSensors_t, unsigned int*)` — °C;
//!   `NVML_TEMPERATURE_GPU` = 0;
//! - `nvmlDeviceGetCurrentClocksEventReasons` (driver ≥ 535) or its older name
//!   `nvmlDeviceGetCurrentClocksThrottleReasons` `(nvmlDevice_t, unsigned long long* reasons)`;
//! - `nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t, unsigned int* limit)` — mW;
//!   `nvmlDeviceGetApplicationsClock(nvmlDevice_t, nvmlClockType_t, unsigned int*)` — MHz;
//!   `nvmlDeviceGetPersistenceMode(nvmlDevice_t, nvmlEnableState_t*)` — 0 disabled, 1 enabled.
//!
//! `NVML_SUCCESS` is 0. NVML is thread-safe, so one process-wide initialisation serves every sampler.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CString};
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

use super::{PowerSample, PowerSource};

type Device = *mut c_void;
type Ret = c_int;
const SUCCESS: Ret = 0;
const CLOCK_SM: c_int = 1;
const CLOCK_MEM: c_int = 2;
const TEMPERATURE_GPU: c_int = 0;

/// The entry points attnbench uses; optional ones are absent on older drivers.
pub struct Api {
    _lib: libloading::Library,
    count: unsafe extern "C" fn(*mut c_uint) -> Ret,
    by_index: unsafe extern "C" fn(c_uint, *mut Device) -> Ret,
    by_uuid: unsafe extern "C" fn(*const c_char, *mut Device) -> Ret,
    power: unsafe extern "C" fn(Device, *mut c_uint) -> Ret,
    energy: Option<unsafe extern "C" fn(Device, *mut c_ulonglong) -> Ret>,
    clock: unsafe extern "C" fn(Device, c_int, *mut c_uint) -> Ret,
    temperature: unsafe extern "C" fn(Device, c_int, *mut c_uint) -> Ret,
    reasons: Option<unsafe extern "C" fn(Device, *mut c_ulonglong) -> Ret>,
    power_limit: Option<unsafe extern "C" fn(Device, *mut c_uint) -> Ret>,
    app_clock: Option<unsafe extern "C" fn(Device, c_int, *mut c_uint) -> Ret>,
    persistence: Option<unsafe extern "C" fn(Device, *mut c_int) -> Ret>,
}

impl Api {
    /// Loads `path` and initialises NVML; `None` when the library, a required symbol or the
    /// initialisation (no driver, no device) is missing.
    pub fn load(path: &str) -> Option<Api> {
        // SAFETY: loading a shared library runs its initialisers; libnvidia-ml's are the driver's own.
        let lib = unsafe { libloading::Library::new(path) }.ok()?;
        // SAFETY: each symbol is read with the signature nvml.h declares for it (module doc).
        unsafe {
            macro_rules! sym {
                ($name:literal) => {
                    lib.get($name).ok().map(|s: libloading::Symbol<_>| *s)
                };
            }
            let init: unsafe extern "C" fn() -> Ret = sym!(b"nvmlInit_v2\0")?;
            if init() != SUCCESS {
                return None;
            }
            let api = Api {
                count: sym!(b"nvmlDeviceGetCount_v2\0")?,
                by_index: sym!(b"nvmlDeviceGetHandleByIndex_v2\0")?,
                by_uuid: sym!(b"nvmlDeviceGetHandleByUUID\0")?,
                power: sym!(b"nvmlDeviceGetPowerUsage\0")?,
                energy: sym!(b"nvmlDeviceGetTotalEnergyConsumption\0"),
                clock: sym!(b"nvmlDeviceGetClockInfo\0")?,
                temperature: sym!(b"nvmlDeviceGetTemperature\0")?,
                reasons: sym!(b"nvmlDeviceGetCurrentClocksEventReasons\0").or(sym!(b"nvmlDeviceGetCurrentClocksThrottleReasons\0")),
                power_limit: sym!(b"nvmlDeviceGetEnforcedPowerLimit\0"),
                app_clock: sym!(b"nvmlDeviceGetApplicationsClock\0"),
                persistence: sym!(b"nvmlDeviceGetPersistenceMode\0"),
                _lib: lib,
            };
            Some(api)
        }
    }

    /// The process-wide NVML (`libnvidia-ml.so.1`, loaded once), or `None` on a machine without it.
    pub fn get() -> Option<&'static Api> {
        static NVML: OnceLock<Option<Api>> = OnceLock::new();
        NVML.get_or_init(|| Api::load("libnvidia-ml.so.1")).as_ref()
    }

    fn device(&self, t: &Target) -> Option<Device> {
        let mut d: Device = std::ptr::null_mut();
        // SAFETY: out-pointer to a handle; the UUID is NUL-terminated.
        let r = unsafe {
            match t {
                Target::Index(i) => (self.by_index)(*i, &mut d),
                Target::Uuid(u) => (self.by_uuid)(CString::new(u.as_str()).ok()?.as_ptr(), &mut d),
            }
        };
        (r == SUCCESS).then_some(d)
    }

    fn u32_of(&self, f: impl FnOnce(*mut c_uint) -> Ret) -> Option<f64> {
        let mut v: c_uint = 0;
        (f(&mut v) == SUCCESS).then_some(v as f64)
    }
}

/// Which NVML device a CUDA ordinal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Index(u32),
    Uuid(String),
}

/// The NVML device of CUDA device `ordinal` given `CUDA_VISIBLE_DEVICES`: its `ordinal`-th entry (an
/// index, or a `GPU-…` UUID), or `ordinal` itself when the variable is unset. NVML numbers devices in
/// PCI bus order; CUDA's default order (fastest first) equals it on nodes of identical GPUs, and
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes it so everywhere (docs/ENERGY.md).
pub fn target_for(ordinal: usize, visible: Option<&str>) -> Option<Target> {
    let Some(v) = visible.map(str::trim).filter(|v| !v.is_empty()) else {
        return Some(Target::Index(ordinal as u32));
    };
    let entry = v.split(',').map(str::trim).nth(ordinal)?;
    if entry.starts_with("GPU-") {
        Some(Target::Uuid(entry.to_string()))
    } else {
        entry.parse().ok().map(Target::Index)
    }
}

/// One GPU read through NVML.
pub struct NvmlSource {
    api: &'static Api,
    device: Device,
    origin: Instant,
}

// SAFETY: an NVML device handle is an opaque pointer owned by the library, which is thread-safe
// (nvml.h: "all NVML calls are thread-safe"); the sampler moves the source to its thread.
unsafe impl Send for NvmlSource {}

impl NvmlSource {
    /// The NVML device of CUDA device `ordinal`; `None` without NVML or when it is not found.
    pub fn open(ordinal: usize) -> Option<NvmlSource> {
        NvmlSource::on(Api::get()?, &target_for(ordinal, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref())?)
    }

    /// The device `target` of an opened NVML.
    pub fn on(api: &'static Api, target: &Target) -> Option<NvmlSource> {
        Some(NvmlSource { api, device: api.device(target)?, origin: Instant::now() })
    }
}

impl PowerSource for NvmlSource {
    fn name(&self) -> &'static str {
        "nvml"
    }
    fn sample(&mut self) -> Option<PowerSample> {
        let (a, d) = (self.api, self.device);
        let t_ms = self.origin.elapsed().as_secs_f64() * 1e3;
        // SAFETY (every call below): a live device handle and out-pointers of the declared types.
        let energy_mj = a.energy.and_then(|f| {
            let mut e: c_ulonglong = 0;
            (unsafe { f(d, &mut e) } == SUCCESS).then_some(e as f64)
        });
        let throttle = a
            .reasons
            .and_then(|f| {
                let mut r: c_ulonglong = 0;
                (unsafe { f(d, &mut r) } == SUCCESS).then_some(r)
            })
            .unwrap_or(0);
        let s = PowerSample {
            t_ms,
            power_w: a.u32_of(|p| unsafe { (a.power)(d, p) }).map(|mw| mw / 1e3),
            energy_mj,
            sm_clock_mhz: a.u32_of(|p| unsafe { (a.clock)(d, CLOCK_SM, p) }),
            mem_clock_mhz: a.u32_of(|p| unsafe { (a.clock)(d, CLOCK_MEM, p) }),
            temp_c: a.u32_of(|p| unsafe { (a.temperature)(d, TEMPERATURE_GPU, p) }),
            throttle,
        };
        (s.power_w.is_some() || s.energy_mj.is_some()).then_some(s)
    }
}

/// A GPU's power and clock settings, for `meta.json` and `attnbench env`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct GpuPowerSettings {
    /// NVML index.
    pub index: u32,
    /// Enforced power limit, W.
    pub power_limit_w: Option<f64>,
    /// Application clocks (what the GPU runs kernels at unless it boosts or throttles), MHz.
    pub app_sm_clock_mhz: Option<f64>,
    pub app_mem_clock_mhz: Option<f64>,
    pub persistence_mode: Option<bool>,
}

/// Every GPU's settings as NVML gives them (empty without NVML).
pub fn gpu_settings() -> Vec<GpuPowerSettings> {
    Api::get().map(settings_of).unwrap_or_default()
}

/// Every GPU's settings through an opened NVML.
pub fn settings_of(a: &Api) -> Vec<GpuPowerSettings> {
    let mut n: c_uint = 0;
    // SAFETY: out-pointer.
    if unsafe { (a.count)(&mut n) } != SUCCESS {
        return vec![];
    }
    (0..n)
        .filter_map(|i| {
            let d = a.device(&Target::Index(i))?;
            // SAFETY (every call below): a live device handle and out-pointers of the declared types.
            Some(GpuPowerSettings {
                index: i,
                power_limit_w: a.power_limit.and_then(|f| a.u32_of(|p| unsafe { f(d, p) })).map(|mw| mw / 1e3),
                app_sm_clock_mhz: a.app_clock.and_then(|f| a.u32_of(|p| unsafe { f(d, CLOCK_SM, p) })),
                app_mem_clock_mhz: a.app_clock.and_then(|f| a.u32_of(|p| unsafe { f(d, CLOCK_MEM, p) })),
                persistence_mode: a.persistence.and_then(|f| {
                    let mut m: c_int = 0;
                    (unsafe { f(d, &mut m) } == SUCCESS).then_some(m == 1)
                }),
            })
        })
        .collect()
}

/// One line per GPU: `0: power limit 700 W, application clocks 1980/2619 MHz (SM/memory), persistence on`.
pub fn settings_text(s: &[GpuPowerSettings]) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map(|x| format!("{x:.0} {unit}")).unwrap_or_else(|| "n/a".into());
    s.iter()
        .map(|g| {
            format!(
                "{}: power limit {}, application clocks {}/{} (SM/memory), persistence {}",
                g.index,
                opt(g.power_limit_w, "W"),
                opt(g.app_sm_clock_mhz, "MHz"),
                opt(g.app_mem_clock_mhz, "MHz"),
                match g.persistence_mode {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "n/a",
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::super::PowerReading;
    use super::*;

    #[test]
    fn a_missing_library_is_no_source_not_an_error() {
        assert!(Api::load("libnvidia-ml-absent-for-this-test.so.1").is_none());
        // This CPU machine has no driver: every CUDA ordinal falls back to `unavailable`.
        if Api::get().is_none() {
            assert!(NvmlSource::open(0).is_none());
            assert_eq!(super::super::source_for(tch::Device::Cuda(0)).name(), "unavailable");
            assert!(gpu_settings().is_empty());
        }
    }

    /// A stand-in libnvidia-ml built here from C with the signatures of nvml.h (module doc), loaded
    /// through the same dlopen path: units (mW → W, mJ), clock types, the older throttle-reasons
    /// name as fallback, handles by index and by UUID, the settings for meta.json, and an
    /// initialisation that fails (no driver) giving no source.
    #[test]
    fn a_stand_in_nvml_is_read_through_dlopen() {
        const FAKE: &str = r#"
#include <string.h>
typedef void *dev;
static unsigned long long energy = 1000000ULL;
int nvmlInit_v2(void) {
#ifdef FAIL_INIT
    return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */
#else
    return 0;
#endif
}
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, dev *d) { if (i >= 2) return 2; *d = (dev)(long)(i + 1); return 0; }
int nvmlDeviceGetHandleByUUID(const char *u, dev *d) { if (strcmp(u, "GPU-fake-1")) return 13; *d = (dev)2L; return 0; }
int nvmlDeviceGetPowerUsage(dev d, unsigned *p) { *p = 350000u + 1000u * (unsigned)(long)d; return 0; }
int nvmlDeviceGetTotalEnergyConsumption(dev d, unsigned long long *e) { (void)d; energy += 5000ULL; *e = energy; return 0; }
int nvmlDeviceGetClockInfo(dev d, int t, unsigned *c) { (void)d; if (t == 1) { *c = 1980; return 0; } if (t == 2) { *c = 2619; return 0; } return 1; }
int nvmlDeviceGetTemperature(dev d, int s, unsigned *t) { (void)d; if (s != 0) return 1; *t = 55; return 0; }
int nvmlDeviceGetCurrentClocksThrottleReasons(dev d, unsigned long long *r) { (void)d; *r = 0x4ULL | 0x2ULL; return 0; }
int nvmlDeviceGetEnforcedPowerLimit(dev d, unsigned *l) { (void)d; *l = 700000u; return 0; }
int nvmlDeviceGetApplicationsClock(dev d, int t, unsigned *c) { (void)d; *c = t == 1 ? 1755u : 2619u; return 0; }
int nvmlDeviceGetPersistenceMode(dev d, int *m) { (void)d; *m = 1; return 0; }
"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fake.c"), FAKE).unwrap();
        let build = |name: &str, defs: &[&str]| {
            let lib = dir.path().join(name);
            let ok = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).args(defs).arg(dir.path().join("fake.c")).status().unwrap();
            assert!(ok.success(), "cc builds the stand-in");
            lib.to_str().unwrap().to_string()
        };
        let api: &'static Api = Box::leak(Box::new(Api::load(&build("libfake-nvml.so", &[])).expect("the stand-in loads")));
        let mut s = NvmlSource::on(api, &Target::Index(0)).unwrap();
        assert_eq!(s.name(), "nvml");
        let (a, b) = (s.sample().unwrap(), s.sample().unwrap());
        assert_eq!(a.power_w, Some(351.0), "mW → W");
        assert_eq!((a.sm_clock_mhz, a.mem_clock_mhz, a.temp_c), (Some(1980.0), Some(2619.0), Some(55.0)));
        assert_eq!(a.throttle, 0x6, "read through the older entry point");
        assert_eq!(b.energy_mj.unwrap() - a.energy_mj.unwrap(), 5000.0, "mJ, as the counter gives them");
        let reading = PowerReading::of("nvml", &[PowerSample { t_ms: 0.0, ..a }, PowerSample { t_ms: 100.0, ..b }]);
        assert_eq!((reading.counter_j, reading.throttle_text().as_str()), (Some(5.0), "sw_power_cap"));
        let mut by_uuid = NvmlSource::on(api, &Target::Uuid("GPU-fake-1".into())).unwrap();
        assert_eq!(by_uuid.sample().unwrap().power_w, Some(352.0));
        assert!(NvmlSource::on(api, &Target::Uuid("GPU-other".into())).is_none());
        assert!(NvmlSource::on(api, &Target::Index(5)).is_none());
        let settings = settings_of(api);
        assert_eq!(settings.len(), 2);
        assert_eq!(
            settings[1],
            GpuPowerSettings {
                index: 1,
                power_limit_w: Some(700.0),
                app_sm_clock_mhz: Some(1755.0),
                app_mem_clock_mhz: Some(2619.0),
                persistence_mode: Some(true)
            }
        );
        assert!(Api::load(&build("libfake-nvml-nodriver.so", &["-DFAIL_INIT"])).is_none(), "no driver: no source");
    }

    #[test]
    fn cuda_ordinals_map_to_nvml_devices_through_cuda_visible_devices() {
        assert_eq!(target_for(1, None), Some(Target::Index(1)));
        assert_eq!(target_for(0, Some("3,1")), Some(Target::Index(3)));
        assert_eq!(target_for(1, Some(" 3, 1 ")), Some(Target::Index(1)));
        assert_eq!(target_for(0, Some("GPU-8a1b")), Some(Target::Uuid("GPU-8a1b".into())));
        assert_eq!(target_for(2, Some("0,1")), None, "no such visible device");
        assert_eq!(target_for(0, Some("MIG-abc")), None, "MIG slices share the GPU's power: not attributed");
        assert_eq!(target_for(0, Some("")), Some(Target::Index(0)));
    }

    #[test]
    fn settings_line_says_what_nvml_did_not_give() {
        let s =
            [GpuPowerSettings { index: 0, power_limit_w: Some(700.0), app_sm_clock_mhz: Some(1980.0), app_mem_clock_mhz: None, persistence_mode: Some(true) }];
        assert_eq!(settings_text(&s), "0: power limit 700 W, application clocks 1980 MHz/n/a (SM/memory), persistence on");
    }
}
