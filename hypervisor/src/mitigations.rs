//! Microarchitectural flushes around guest entries (review M5).
//!
//! A hostile test guest may sample data the host (or, on an SMT sibling, another partition)
//! left in the core's buffers: L1TF reads the L1 data cache, MDS/TAA/MMIO stale data/RFDS
//! read the fill, store and load buffers and register files, and branch predictors carry
//! targets across a switch. The SMT part is closed by the policy (no two partitions on one
//! core unless both allow it, `platform::policy_fit`); what the CPU itself needs is flushed
//! here, on the CPU that enters:
//!
//! - L1D flush (IA32_FLUSH_CMD) before each entry into a test partition where the CPU is
//!   affected by L1TF (IA32_ARCH_CAPABILITIES.RDCL_NO clear) and has the command, unless it
//!   says the flush is not needed on VM entry (SKIP_L1DFL_VMENTRY);
//! - otherwise VERW (buffer clear, CPUID.7.0:EDX.MD_CLEAR) before each entry into a test
//!   partition where the CPU is affected by MDS, TAA, MMIO stale data or RFDS (the L1D flush
//!   clears the same buffers where it runs);
//! - IBPB (IA32_PRED_CMD) when a CPU enters a different partition than it entered last, or
//!   its first one (the firmware or another partition ran there), for every guest.
//!
//! The decision ([`EntryFlush::decide`]) is pure and host-tested; each CPU makes it from its
//! own CPUID and IA32_ARCH_CAPABILITIES (hybrid parts differ by core). The instructions are
//! in `platform::instructions`.

use core::sync::atomic::{AtomicU32, Ordering};

/// IA32_ARCH_CAPABILITIES bits used here (SDM vol. 4, table 2-2).
pub mod arch_caps {
    pub const RDCL_NO: u64 = 1 << 0;
    pub const SKIP_L1DFL_VMENTRY: u64 = 1 << 3;
    pub const MDS_NO: u64 = 1 << 5;
    pub const TAA_NO: u64 = 1 << 8;
    pub const SBDR_SSDP_NO: u64 = 1 << 13;
    pub const FBSDP_NO: u64 = 1 << 14;
    pub const PSDP_NO: u64 = 1 << 15;
    pub const RFDS_NO: u64 = 1 << 27;
    pub const RFDS_CLEAR: u64 = 1 << 28;
}

/// What one CPU reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuReport {
    /// GenuineIntel: the L1TF/MDS family applies (AMD parts are not affected by them).
    pub intel: bool,
    /// CPUID.7.0:EDX[28]: IA32_FLUSH_CMD.
    pub l1d_flush: bool,
    /// CPUID.7.0:EDX[10]: VERW clears the buffers.
    pub md_clear: bool,
    /// IBPB through IA32_PRED_CMD: CPUID.7.0:EDX[26] (Intel) or 0x8000_0008 EBX[12] (AMD).
    pub ibpb: bool,
    /// IA32_ARCH_CAPABILITIES, `None` where CPUID.7.0:EDX[29] says it does not exist.
    pub arch_caps: Option<u64>,
}

/// What to do around entries on one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryFlush {
    /// Flush the L1 data cache before entering a test partition.
    pub l1d: bool,
    /// VERW before entering a test partition.
    pub verw: bool,
    /// IBPB when the CPU enters another partition than last time.
    pub ibpb_on_switch: bool,
}

impl EntryFlush {
    /// The flushes a CPU that reports `r` needs (see the module documentation).
    pub fn decide(r: &CpuReport) -> EntryFlush {
        use arch_caps::*;
        let caps = r.arch_caps.unwrap_or(0);
        let not = |bit: u64| caps & bit == 0;
        let (l1d, verw) = if r.intel {
            let l1tf = not(RDCL_NO);
            let l1d = l1tf && r.l1d_flush && not(SKIP_L1DFL_VMENTRY);
            let buffers = not(MDS_NO)
                || not(TAA_NO)
                || not(SBDR_SSDP_NO)
                || not(FBSDP_NO)
                || not(PSDP_NO)
                || (caps & RFDS_CLEAR != 0 && not(RFDS_NO));
            (l1d, !l1d && r.md_clear && buffers)
        } else {
            (false, false)
        };
        EntryFlush {
            l1d,
            verw,
            ibpb_on_switch: r.ibpb,
        }
    }

    /// What the running CPU reports (CPUID, IA32_ARCH_CAPABILITIES).
    pub fn for_this_cpu() -> EntryFlush {
        EntryFlush::decide(&this_cpu())
    }
}

/// The running CPU's report.
pub fn this_cpu() -> CpuReport {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
    let v = __cpuid(0);
    let intel = (v.ebx, v.edx, v.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
    let edx7 = if v.eax >= 7 {
        __cpuid_count(7, 0).edx
    } else {
        0
    };
    let amd_ibpb =
        __cpuid(0x8000_0000).eax >= 0x8000_0008 && __cpuid(0x8000_0008).ebx & (1 << 12) != 0;
    let arch_caps = (edx7 & (1 << 29) != 0).then(|| {
        // SAFETY: CPUID says IA32_ARCH_CAPABILITIES exists; reading it changes nothing.
        unsafe { crate::platform::instructions::rdmsr(MSR_ARCH_CAPABILITIES) }
    });
    CpuReport {
        intel,
        l1d_flush: edx7 & (1 << 28) != 0,
        md_clear: edx7 & (1 << 10) != 0,
        ibpb: edx7 & (1 << 26) != 0 || amd_ibpb,
        arch_caps,
    }
}

/// The partition each CPU entered last (tag + 1; 0: none yet), by APIC ID.
static LAST_ENTERED: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

/// One vCPU's flushes: decided on the CPU that runs it, applied before each entry.
#[derive(Clone, Copy, Debug)]
pub struct EntryBarrier {
    flush: EntryFlush,
    /// Entering a test partition (L1D flush / VERW apply).
    untrusted: bool,
    /// The partition: its ASID or VPID.
    tag: u32,
    /// APIC ID of the CPU (read on the first entry).
    cpu: Option<u32>,
}

impl EntryBarrier {
    /// For a vCPU of partition `tag` (its ASID/VPID), created on the CPU that will run it.
    pub fn new(flush: EntryFlush, untrusted: bool, tag: u32) -> Self {
        EntryBarrier {
            flush,
            untrusted,
            tag,
            cpu: None,
        }
    }

    /// What to do now, given the partition this CPU entered last (`None`: none yet): an
    /// IBPB, an L1D flush, a VERW.
    pub fn plan(&self, last: Option<u32>) -> (bool, bool, bool) {
        let ibpb = self.flush.ibpb_on_switch && last != Some(self.tag);
        let l1d = self.untrusted && self.flush.l1d;
        let verw = self.untrusted && self.flush.verw;
        (ibpb, l1d, verw)
    }

    /// Right before VMRUN/VMRESUME, in host mode on the vCPU's CPU.
    ///
    /// # Safety
    /// Host mode at CPL 0 on the CPU this barrier's flushes were decided for (they rely on
    /// its CPUID).
    pub unsafe fn before_entry(&mut self) {
        let cpu = *self
            .cpu
            .get_or_insert_with(|| core::arch::x86_64::__cpuid(1).ebx >> 24);
        let slot = &LAST_ENTERED[(cpu as usize) % LAST_ENTERED.len()];
        let last = slot.swap(self.tag + 1, Ordering::Relaxed).checked_sub(1);
        let (ibpb, l1d, verw) = self.plan(last);
        use crate::platform::instructions as insn;
        // SAFETY: the caller's contract: CPL 0 on a CPU whose CPUID reports each command.
        unsafe {
            if ibpb {
                insn::ibpb();
            }
            if l1d {
                insn::l1d_flush();
            } else if verw {
                insn::verw();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::arch_caps::*;
    use super::*;

    const ALL_NO: u64 = RDCL_NO | MDS_NO | TAA_NO | SBDR_SSDP_NO | FBSDP_NO | PSDP_NO | RFDS_NO;

    /// Skylake client: no IA32_ARCH_CAPABILITIES, L1TF and MDS affected, has the L1D flush
    /// command and MD_CLEAR (microcode).
    fn skylake() -> CpuReport {
        CpuReport {
            intel: true,
            l1d_flush: true,
            md_clear: true,
            ibpb: true,
            arch_caps: None,
        }
    }

    #[test]
    fn l1tf_parts_flush_l1d_which_also_clears_the_buffers() {
        assert_eq!(
            EntryFlush::decide(&skylake()),
            EntryFlush {
                l1d: true,
                verw: false,
                ibpb_on_switch: true
            }
        );
        // Without the flush command (old microcode): VERW at least.
        let old = CpuReport {
            l1d_flush: false,
            ..skylake()
        };
        assert!(EntryFlush::decide(&old).verw);
        // The CPU says the flush is not needed on VM entry: none, then VERW for MDS.
        let skip = CpuReport {
            arch_caps: Some(SKIP_L1DFL_VMENTRY),
            ..skylake()
        };
        assert_eq!(
            (
                EntryFlush::decide(&skip).l1d,
                EntryFlush::decide(&skip).verw
            ),
            (false, true)
        );
    }

    #[test]
    fn mds_taa_mmio_and_rfds_parts_clear_buffers() {
        // Cascade Lake: not L1TF or MDS affected, TAA affected.
        let cascade = CpuReport {
            arch_caps: Some(ALL_NO & !TAA_NO & !RFDS_NO),
            ..skylake()
        };
        assert_eq!(
            EntryFlush::decide(&cascade),
            EntryFlush {
                l1d: false,
                verw: true,
                ibpb_on_switch: true
            }
        );
        // Gracemont E-cores of the i9-13900HX: only RFDS, with RFDS_CLEAR.
        let gracemont = CpuReport {
            arch_caps: Some((ALL_NO & !RFDS_NO) | RFDS_CLEAR),
            ..skylake()
        };
        assert!(EntryFlush::decide(&gracemont).verw);
        // RFDS affected but VERW does not clear it (no RFDS_CLEAR): nothing VERW can do.
        let no_clear = CpuReport {
            arch_caps: Some(ALL_NO & !RFDS_NO),
            ..skylake()
        };
        assert!(!EntryFlush::decide(&no_clear).verw);
        // Without MD_CLEAR VERW clears nothing: not used.
        let no_md_clear = CpuReport {
            md_clear: false,
            ..cascade
        };
        assert!(!EntryFlush::decide(&no_md_clear).verw);
    }

    #[test]
    fn unaffected_intel_and_amd_parts_only_ibpb() {
        // Raptor Cove P-cores: every *_NO bit.
        let raptor = CpuReport {
            arch_caps: Some(ALL_NO),
            ..skylake()
        };
        let none = EntryFlush {
            l1d: false,
            verw: false,
            ibpb_on_switch: true,
        };
        assert_eq!(EntryFlush::decide(&raptor), none);
        let amd = CpuReport {
            intel: false,
            l1d_flush: true,
            md_clear: true,
            ibpb: true,
            arch_caps: None,
        };
        assert_eq!(EntryFlush::decide(&amd), none, "AMD: no L1TF/MDS family");
        let bare = CpuReport::default();
        assert_eq!(EntryFlush::decide(&bare), EntryFlush::default());
    }

    #[test]
    fn ibpb_on_a_switch_flushes_only_for_test_partitions() {
        let flush = EntryFlush::decide(&skylake());
        let test = EntryBarrier::new(flush, true, 3);
        assert_eq!(
            test.plan(None),
            (true, true, false),
            "first entry on this CPU"
        );
        assert_eq!(
            test.plan(Some(3)),
            (false, true, false),
            "same partition again"
        );
        assert_eq!(
            test.plan(Some(1)),
            (true, true, false),
            "another partition ran here"
        );
        let primary = EntryBarrier::new(flush, false, 1);
        assert_eq!(primary.plan(Some(1)), (false, false, false));
        assert_eq!(primary.plan(Some(3)), (true, false, false));
    }
}
