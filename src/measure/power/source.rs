//! Which power source a case reads, by device: a file apart from the sources' common types (`power`'s
//! module) so that the sources (nvml, rapl) import those types and this file imports the sources,
//! without a circle.

use super::nvml;
use super::rapl;
use super::{PowerSource, Unavailable};

/// The source for a case on `device`: NVML for a CUDA device (its NVML index found from the CUDA
/// ordinal, see [`super::nvml::Nvml::device_for_cuda`]), RAPL for the CPU; [`super::Unavailable`] when those
/// cannot be read here.
pub fn source_for(device: tch::Device) -> Box<dyn PowerSource> {
    match device {
        tch::Device::Cuda(i) => match nvml::NvmlSource::open(i) {
            Some(s) => Box::new(s),
            None => Box::new(Unavailable),
        },
        _ => match rapl::Rapl::open(std::path::Path::new(rapl::POWERCAP)) {
            Some(r) => Box::new(r),
            None => Box::new(Unavailable),
        },
    }
}
