//! What the bootstrap CPU offers for virtualization, read through `raw-cpuid`.
//!
//! Pure: [`CpuSummary::from_reader`] takes any [`CpuIdReader`], so host tests feed recorded
//! CPUID leaves. EPT support is not in CPUID (it is in the VMX capability MSRs); the caller
//! fills [`CpuSummary::ept`] from the MSRs when VMX is present.

use core::fmt;
use raw_cpuid::{CpuId, CpuIdReader};

/// Hybrid core class from CPUID leaf 0x1A EAX bits 31:24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreType {
    /// 0x20: Intel Atom (an E-core).
    Efficiency,
    /// 0x40: Intel Core (a P-core).
    Performance,
    /// Any other non-zero code.
    Other(u8),
}

impl CoreType {
    /// Decode leaf 0x1A EAX; `None` when the field is zero (leaf not populated).
    pub fn from_leaf_1a_eax(eax: u32) -> Option<Self> {
        match (eax >> 24) as u8 {
            0 => None,
            0x20 => Some(CoreType::Efficiency),
            0x40 => Some(CoreType::Performance),
            other => Some(CoreType::Other(other)),
        }
    }
}

impl fmt::Display for CoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreType::Efficiency => f.write_str("E-core"),
            CoreType::Performance => f.write_str("P-core"),
            CoreType::Other(c) => write!(f, "core type {c:#04x}"),
        }
    }
}

/// CPU vendor as far as the hypervisor backends care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

/// Virtualization-relevant facts about one CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSummary {
    /// The 12-byte vendor string (`GenuineIntel`, `AuthenticAMD`, ...).
    pub vendor_id: [u8; 12],
    pub vendor: Vendor,
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    /// Initial APIC ID of the CPU that ran CPUID (leaf 1 EBX bits 31:24, or leaf 0xB when x2APIC).
    pub apic_id: u32,
    /// Leaf 1 ECX bits 31: we already run under a hypervisor (nested).
    pub under_hypervisor: bool,
    /// AMD SVM (0x8000_0001 ECX bits 2).
    pub svm: bool,
    /// AMD nested paging (0x8000_000A EDX bits 0).
    pub npt: bool,
    /// AMD next-RIP save (0x8000_000A EDX bits 3); without it the hypervisor decodes instruction lengths.
    pub nrip_save: bool,
    /// AMD: number of address space IDs (0x8000_000A EBX).
    pub asids: u32,
    /// Intel VMX (leaf 1 ECX bits 5).
    pub vmx: bool,
    /// Intel EPT, from IA32_VMX_PROCBASED_CTLS2; `None` when not read (no VMX, or not yet probed).
    pub ept: Option<bool>,
    /// Leaf 7 EDX bits 15: the package mixes core types.
    pub hybrid: bool,
    /// Leaf 0x1A on this CPU, when the leaf exists and is populated.
    pub core_type: Option<CoreType>,
    /// Physical address width (0x8000_0008 EAX bits 7:0).
    pub phys_addr_bits: u8,
    /// 1 GiB pages (0x8000_0001 EDX bits 26).
    pub gib_pages: bool,
}

impl CpuSummary {
    /// Read the summary through `reader` (real CPUID, or recorded leaves in tests).
    pub fn from_reader<R: CpuIdReader>(reader: R) -> Self {
        let raw = reader.clone();
        let cpuid = CpuId::with_cpuid_reader(reader);
        let leaf0 = raw.cpuid1(0);
        let max_leaf = leaf0.eax;
        let mut vendor_id = [0u8; 12];
        vendor_id[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
        vendor_id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
        vendor_id[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
        let vendor = match &vendor_id {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Other,
        };

        let fi = cpuid.get_feature_info();
        let (family, model, stepping) = fi.as_ref().map_or((0, 0, 0), |f| {
            (f.family_id(), f.model_id(), f.stepping_id())
        });
        let mut apic_id = fi
            .as_ref()
            .map_or(0, |f| u32::from(f.initial_local_apic_id()));
        if max_leaf >= 0xB && fi.as_ref().is_some_and(|f| f.has_x2apic()) {
            // Leaf 0xB EDX holds the full 32-bit x2APIC ID.
            apic_id = raw.cpuid2(0xB, 0).edx;
        }
        let ext = cpuid.get_extended_processor_and_feature_identifiers();
        let svm_info = cpuid.get_svm_info();
        let hybrid = max_leaf >= 7 && raw.cpuid2(7, 0).edx & (1 << 15) != 0;
        let core_type = if max_leaf >= 0x1A {
            CoreType::from_leaf_1a_eax(raw.cpuid2(0x1A, 0).eax)
        } else {
            None
        };
        let max_ext = raw.cpuid1(0x8000_0000).eax;
        let phys_addr_bits = if max_ext >= 0x8000_0008 {
            raw.cpuid1(0x8000_0008).eax as u8
        } else {
            36
        };

        CpuSummary {
            vendor_id,
            vendor,
            family,
            model,
            stepping,
            apic_id,
            under_hypervisor: fi.as_ref().is_some_and(|f| f.has_hypervisor()),
            svm: ext.as_ref().is_some_and(|e| e.has_svm()),
            npt: svm_info.as_ref().is_some_and(|s| s.has_nested_paging()),
            nrip_save: svm_info.as_ref().is_some_and(|s| s.has_nrip()),
            asids: svm_info.as_ref().map_or(0, |s| s.supported_asids()),
            vmx: fi.as_ref().is_some_and(|f| f.has_vmx()),
            ept: None,
            hybrid,
            core_type,
            phys_addr_bits,
            gib_pages: ext.as_ref().is_some_and(|e| e.has_1gib_pages()),
        }
    }

    /// The vendor string as text (lossy: non-ASCII bytes become `?`).
    pub fn vendor_str(&self) -> &str {
        core::str::from_utf8(&self.vendor_id).unwrap_or("????????????")
    }

    /// Which hardware virtualization backend this CPU can run, if any.
    pub fn backend(&self) -> Option<&'static str> {
        if self.svm && self.npt {
            Some("svm")
        } else if self.vmx && self.ept != Some(false) {
            Some("vmx")
        } else {
            None
        }
    }
}

/// APIC ID of the CPU running this code (x2APIC ID from leaf 0xB when available, else the
/// 8-bit initial APIC ID of leaf 1). Safe on any CPU, any time.
#[cfg(target_arch = "x86_64")]
pub fn current_apic_id() -> u32 {
    use core::arch::x86_64::__cpuid_count;
    let leaf0 = __cpuid_count(0, 0);
    if leaf0.eax >= 0xB {
        let b = __cpuid_count(0xB, 0);
        if b.ebx != 0 {
            return b.edx;
        }
    }
    __cpuid_count(1, 0).ebx >> 24
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for CpuSummary {
    /// Several lines; the console prefixes each one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cpu: vendor {} family {:#x} model {:#x} stepping {} apic-id {}{}",
            self.vendor_str(),
            self.family,
            self.model,
            self.stepping,
            self.apic_id,
            if self.under_hypervisor {
                " (running under a hypervisor)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "cpu: svm={} npt={} asids={} nrip-save={} | vmx={} ept={}",
            yes_no(self.svm),
            yes_no(self.npt),
            self.asids,
            yes_no(self.nrip_save),
            yes_no(self.vmx),
            match self.ept {
                Some(e) => yes_no(e),
                None => "n/a",
            }
        )?;
        write!(
            f,
            "cpu: hybrid={} leaf-0x1a={} phys-addr-bits={} 1g-pages={} backend={}",
            yes_no(self.hybrid),
            match self.core_type {
                Some(CoreType::Performance) => "P-core",
                Some(CoreType::Efficiency) => "E-core",
                Some(CoreType::Other(_)) => "other",
                None => "absent",
            },
            self.phys_addr_bits,
            yes_no(self.gib_pages),
            self.backend().unwrap_or("none")
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use raw_cpuid::CpuIdResult;
    use std::string::ToString;

    /// Recorded leaves: (leaf, subleaf, eax, ebx, ecx, edx). Missing leaves read as zero.
    #[derive(Clone)]
    struct Recorded(&'static [(u32, u32, u32, u32, u32, u32)]);

    impl CpuIdReader for Recorded {
        fn cpuid2(&self, eax: u32, ecx: u32) -> CpuIdResult {
            self.0
                .iter()
                .find(|r| r.0 == eax && r.1 == ecx)
                .map(|r| CpuIdResult {
                    eax: r.2,
                    ebx: r.3,
                    ecx: r.4,
                    edx: r.5,
                })
                .unwrap_or(CpuIdResult {
                    eax: 0,
                    ebx: 0,
                    ecx: 0,
                    edx: 0,
                })
        }
    }

    /// QEMU 7.2 TCG `-cpu max`, as measured (see shared/reference/emulation.md).
    const QEMU_MAX: Recorded = Recorded(&[
        (0, 0, 0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
        (
            1,
            0,
            0x000f_0f00 | 0x0060_0000,
            0x0000_0800,
            0x8000_0000 | (1 << 21),
            0,
        ),
        (7, 0, 0, 0, 0, 0),
        (0x8000_0000, 0, 0x8000_000a, 0, 0, 0),
        (0x8000_0001, 0, 0, 0, 1 << 2, 1 << 26),
        (0x8000_0008, 0, 0x0000_3028, 0, 0, 0),
        (0x8000_000a, 0, 1, 16, 0, 0x1001_0001),
    ]);

    /// An i9-13900HX P-core: Intel, VMX, hybrid, leaf 0x1A says Core.
    const RAPTOR_LAKE_P: Recorded = Recorded(&[
        (0, 0, 0x20, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        (1, 0, 0x000b_0671, 0x1000_0800, (1 << 5) | (1 << 21), 0),
        (7, 0, 0, 0, 0, 1 << 15),
        (0xb, 0, 1, 2, 0x100, 16),
        (0x1a, 0, 0x4000_0001, 0, 0, 0),
        (0x8000_0000, 0, 0x8000_0008, 0, 0, 0),
        (0x8000_0001, 0, 0, 0, 0, 1 << 26),
        (0x8000_0008, 0, 0x0000_3027, 0, 0, 0),
    ]);

    #[test]
    fn qemu_tcg_max_is_amd_with_svm_npt_16_asids_no_nrip() {
        let s = CpuSummary::from_reader(QEMU_MAX);
        assert_eq!(s.vendor_str(), "AuthenticAMD");
        assert_eq!(s.vendor, Vendor::Amd);
        assert!(s.svm && s.npt && !s.nrip_save && !s.vmx);
        assert_eq!(s.asids, 16);
        assert_eq!(s.phys_addr_bits, 40);
        assert!(s.gib_pages);
        assert!(s.under_hypervisor);
        assert!(!s.hybrid);
        assert_eq!(s.core_type, None);
        assert_eq!(s.backend(), Some("svm"));
        let text = s.to_string();
        assert!(text.contains("vendor AuthenticAMD"), "{text}");
        assert!(
            text.contains("svm=yes npt=yes asids=16 nrip-save=no | vmx=no ept=n/a"),
            "{text}"
        );
        assert!(text.contains("hybrid=no leaf-0x1a=absent"), "{text}");
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn raptor_lake_p_core_is_intel_vmx_hybrid() {
        let mut s = CpuSummary::from_reader(RAPTOR_LAKE_P);
        assert_eq!(s.vendor, Vendor::Intel);
        assert!(s.vmx && !s.svm && !s.npt);
        assert_eq!(s.asids, 0);
        assert!(s.hybrid);
        assert_eq!(s.core_type, Some(CoreType::Performance));
        assert_eq!(
            s.apic_id, 16,
            "x2APIC ID from leaf 0xB, not the 8-bit leaf-1 field"
        );
        assert_eq!((s.family, s.model), (6, 0xb7));
        assert_eq!(
            s.backend(),
            Some("vmx"),
            "EPT not probed yet: VMX is still a candidate"
        );
        s.ept = Some(false);
        assert_eq!(s.backend(), None);
        s.ept = Some(true);
        let text = s.to_string();
        assert!(
            text.contains("vendor GenuineIntel family 0x6 model 0xb7"),
            "{text}"
        );
        assert!(text.contains("vmx=yes ept=yes"), "{text}");
        assert!(text.contains("hybrid=yes leaf-0x1a=P-core"), "{text}");
    }

    #[test]
    fn core_type_codes() {
        assert_eq!(
            CoreType::from_leaf_1a_eax(0x2000_0000),
            Some(CoreType::Efficiency)
        );
        assert_eq!(
            CoreType::from_leaf_1a_eax(0x4000_0003),
            Some(CoreType::Performance)
        );
        assert_eq!(
            CoreType::from_leaf_1a_eax(0x1000_0000),
            Some(CoreType::Other(0x10))
        );
        assert_eq!(CoreType::from_leaf_1a_eax(0x0000_0001), None);
    }
}
