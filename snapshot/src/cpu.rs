//! The CPU features a snapshot's code may use.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// CPU features the snapshot's code may use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// The vendor string from CPUID leaf 0, e.g. `"GenuineIntel"`.
    /// Informational: restoring on another vendor is allowed if the
    /// features are there.
    pub vendor: String,
    /// Feature names as `is_x86_feature_detected!` spells them.
    pub features: BTreeSet<String>,
}

/// Detects, among the features compiled wasm code may use, those this host has.
#[cfg(target_arch = "x86_64")]
macro_rules! detect {
    ($($name:tt)*) => {
        [$(($name, std::arch::is_x86_feature_detected!($name))),*]
    };
}

impl CpuFeatures {
    /// This host's: the vendor from CPUID leaf 0 and, among the features
    /// compiled wasm code may use (SSE2 … AVX-512, BMI, LZCNT, POPCNT, FMA,
    /// F16C, XSAVE), those the host has.
    #[cfg(target_arch = "x86_64")]
    pub fn host() -> CpuFeatures {
        let leaf0 = core::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [leaf0.ebx, leaf0.edx, leaf0.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        let detected = detect!(
            "sse2" "sse3" "ssse3" "sse4.1" "sse4.2" "popcnt" "avx" "avx2" "bmi1" "bmi2"
            "lzcnt" "fma" "f16c" "avx512f" "avx512vl" "avx512dq" "avx512bw" "avx512bitalg"
            "avx512vbmi" "xsave"
        );
        CpuFeatures {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            features: detected
                .into_iter()
                .filter(|&(_, present)| present)
                .map(|(name, _)| name.to_string())
                .collect(),
        }
    }

    /// This host's: nothing is detected off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn host() -> CpuFeatures {
        CpuFeatures {
            vendor: String::from("unknown"),
            features: BTreeSet::new(),
        }
    }

    /// The features in `self` that `host` lacks, sorted.
    pub fn missing_on(&self, host: &CpuFeatures) -> Vec<String> {
        self.features.difference(&host.features).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn host_has_a_vendor_and_sse2() {
        let host = CpuFeatures::host();
        assert_eq!(host.vendor.len(), 12, "{host:?}");
        assert!(host.features.contains("sse2"), "{host:?}");
        assert!(host.missing_on(&host).is_empty());
    }

    #[test]
    fn missing_is_sorted_difference() {
        let set = |names: &[&str]| CpuFeatures {
            vendor: "GenuineIntel".into(),
            features: names.iter().map(|s| s.to_string()).collect(),
        };
        let snap = set(&["sse2", "avx2", "bmi2", "avx512f"]);
        let host = set(&["sse2", "bmi2", "fma"]);
        assert_eq!(snap.missing_on(&host), ["avx2", "avx512f"]);
        assert!(host
            .missing_on(&set(&["sse2", "bmi2", "fma", "avx"]))
            .is_empty());
    }
}
