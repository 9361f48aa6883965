//! SVM features from CPUID 0x8000_000A (EBX = number of ASIDs, EDX = feature
//! bits). QEMU 7.2 TCG reports only NPT (EDX = 0x1001_0001 with -cpu max is
//! NPT, and bits the TCG does not implement); real CPUs report more.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmFeatures {
    pub asids: u32,
    pub npt: bool,
    /// NRIP save: the VMCB holds the next RIP after instruction exits.
    pub nrip_save: bool,
    pub vmcb_clean: bool,
    pub flush_by_asid: bool,
    pub decode_assists: bool,
}

impl SvmFeatures {
    pub fn from_cpuid(ebx: u32, edx: u32) -> Self {
        SvmFeatures {
            asids: ebx,
            npt: edx & (1 << 0) != 0,
            nrip_save: edx & (1 << 3) != 0,
            vmcb_clean: edx & (1 << 5) != 0,
            flush_by_asid: edx & (1 << 6) != 0,
            decode_assists: edx & (1 << 7) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_tcg_has_npt_only() {
        let f = SvmFeatures::from_cpuid(16, 0x1001_0001);
        assert!(f.npt);
        assert!(!f.nrip_save && !f.vmcb_clean && !f.flush_by_asid && !f.decode_assists);
        assert_eq!(f.asids, 16);
        let zen = SvmFeatures::from_cpuid(0x8000, 0x0001_bcff);
        assert!(zen.nrip_save && zen.vmcb_clean && zen.flush_by_asid && zen.decode_assists);
    }
}
