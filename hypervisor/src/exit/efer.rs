//! WRMSR of EFER (0xC000_0080) checked as the processor checks it, so that a
//! value hardware would refuse raises #GP in the guest instead of reaching the
//! VMCB/VMCS and failing the next VM entry (review L1).
//!
//! Pure: the caller passes the guest's current EFER, the value written, whether
//! paging is on, and the bits this CPU implements ([`supported`], from CPUID).

use nexus_abi::cpuid::CpuidResult;

/// SYSCALL enable.
pub const SCE: u64 = 1 << 0;
/// Long mode enable.
pub const LME: u64 = 1 << 8;
/// Long mode active: the processor's status bit; WRMSR does not change it.
pub const LMA: u64 = 1 << 10;
/// No-execute enable.
pub const NXE: u64 = 1 << 11;
/// SVM enable (AMD).
pub const SVME: u64 = 1 << 12;
/// Fast FXSAVE/FXRSTOR (AMD).
pub const FFXSR: u64 = 1 << 14;
/// Translation cache extension (AMD).
pub const TCE: u64 = 1 << 15;
/// Automatic IBRS (AMD Zen 4).
pub const AUTOIBRS: u64 = 1 << 21;

/// Why a write is refused (for tests and logs; the guest sees #GP(0)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EferFault {
    /// A bit this CPU does not implement (or that the guest may not set).
    Reserved { bits: u64 },
    /// LME changed while CR0.PG = 1 (SDM vol. 3A 10.8.5, APM vol. 2 14.6.1).
    LmeWhilePaging,
}

/// The EFER bits a guest may write on this CPU: SCE, LME/LMA with long mode,
/// NXE with NX, FFXSR, TCE and automatic IBRS where CPUID reports them. Never
/// SVME: every guest, the primary included, reads EFER through an exit that
/// leaves it out and finds SVM disabled in CPUID, so setting it is #GP as on a
/// CPU without SVM (the SVM backend keeps the real bit set underneath).
pub fn supported(cpuid: impl Fn(u32, u32) -> CpuidResult) -> u64 {
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let mut bits = SCE | LMA;
    if max_ext >= 0x8000_0001 {
        let r = cpuid(0x8000_0001, 0);
        if r.edx & (1 << 29) != 0 {
            bits |= LME;
        }
        if r.edx & (1 << 20) != 0 {
            bits |= NXE;
        }
        if r.edx & (1 << 25) != 0 {
            bits |= FFXSR;
        }
        if r.ecx & (1 << 17) != 0 {
            bits |= TCE;
        }
    }
    if max_ext >= 0x8000_0021 && cpuid(0x8000_0021, 0).eax & (1 << 8) != 0 {
        bits |= AUTOIBRS;
    }
    bits
}

/// The EFER a WRMSR of `new` leaves, or why the processor would raise #GP.
/// LMA is the processor's: whatever the guest writes there, the current value
/// stays (the backends keep it too).
pub fn check_write(old: u64, new: u64, paging: bool, supported: u64) -> Result<u64, EferFault> {
    let reserved = new & !supported;
    if reserved != 0 {
        return Err(EferFault::Reserved { bits: reserved });
    }
    if paging && (old ^ new) & LME != 0 {
        return Err(EferFault::LmeWhilePaging);
    }
    Ok((new & !LMA) | (old & LMA))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AMD-like CPU: LM, NX, FFXSR, TCE, automatic IBRS.
    fn amd(leaf: u32, _: u32) -> CpuidResult {
        match leaf {
            0x8000_0000 => CpuidResult {
                eax: 0x8000_0021,
                ..Default::default()
            },
            0x8000_0001 => CpuidResult {
                ecx: 1 << 17,
                edx: 1 << 29 | 1 << 20 | 1 << 25,
                ..Default::default()
            },
            0x8000_0021 => CpuidResult {
                eax: 1 << 8,
                ..Default::default()
            },
            _ => CpuidResult::default(),
        }
    }

    /// An Intel-like CPU: LM and NX only.
    fn intel(leaf: u32, _: u32) -> CpuidResult {
        match leaf {
            0x8000_0000 => CpuidResult {
                eax: 0x8000_0008,
                ..Default::default()
            },
            0x8000_0001 => CpuidResult {
                edx: 1 << 29 | 1 << 20 | 1 << 11,
                ..Default::default()
            },
            _ => CpuidResult::default(),
        }
    }

    #[test]
    fn supported_bits_follow_cpuid() {
        assert_eq!(supported(intel), SCE | LME | LMA | NXE);
        assert_eq!(
            supported(amd),
            SCE | LME | LMA | NXE | FFXSR | TCE | AUTOIBRS
        );
        // No extended leaves at all: only SCE (and LMA, which writes never change).
        assert_eq!(supported(|_, _| CpuidResult::default()), SCE | LMA);
    }

    #[test]
    fn reserved_bits_raise_gp() {
        let s = supported(intel);
        let long = SCE | LME | LMA | NXE;
        // The review's appendix value: bit 63 with LME|LMA|NXE.
        assert_eq!(
            check_write(long, 0x8000_0000_0000_0d00, true, s),
            Err(EferFault::Reserved { bits: 1 << 63 })
        );
        assert_eq!(
            check_write(long, long | SVME, true, s),
            Err(EferFault::Reserved { bits: SVME }),
            "SVME on a CPU whose guests see no SVM"
        );
        assert_eq!(
            check_write(long, long | SVME, true, supported(amd)),
            Err(EferFault::Reserved { bits: SVME }),
            "SVME on an SVM CPU: no guest sees SVM"
        );
        assert_eq!(
            check_write(long, long | FFXSR, true, s),
            Err(EferFault::Reserved { bits: FFXSR }),
            "an AMD bit on an Intel CPU"
        );
        assert_eq!(check_write(long, long, true, s), Ok(long));
    }

    #[test]
    fn lme_cannot_change_while_paging() {
        let s = supported(intel);
        let long = SCE | LME | LMA | NXE;
        assert_eq!(
            check_write(long, SCE | NXE, true, s),
            Err(EferFault::LmeWhilePaging)
        );
        assert_eq!(
            check_write(NXE, NXE | LME, true, s),
            Err(EferFault::LmeWhilePaging)
        );
        // Without paging LME may change (the way into and out of long mode).
        assert_eq!(check_write(NXE, NXE | LME, false, s), Ok(NXE | LME));
        assert_eq!(check_write(LME, 0, false, s), Ok(0));
    }

    #[test]
    fn lma_stays_the_processors() {
        let s = supported(amd);
        let long = SCE | LME | LMA | NXE;
        assert_eq!(check_write(long, long & !LMA, true, s), Ok(long));
        assert_eq!(check_write(LME, LME | LMA, false, s), Ok(LME));
    }
}
