//! Filling a VMCB: the control area every partition shares (intercepts,
//! NPT, ASID, permission maps) and the 64-bit start state of a test guest.

use super::vmcb::{ctrl, misc1, misc2, save, tlb, Segment, Vmcb};
use crate::partition::guest_setup::GuestStart;

/// Default PAT (write-back first), used as the guest's PAT under NPT.
pub const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;
pub const EFER_SVME: u64 = 1 << 12;

/// EFER as the guest sees it (every guest's EFER reads exit, the primary's too): without
/// SVME, which the VMCB's EFER must hold for VMRUN but which no guest may see, since CPUID
/// tells every guest that SVM is absent.
pub fn guest_efer(vmcb: u64) -> u64 {
    vmcb & !EFER_SVME
}

/// The VMCB's EFER after the guest wrote `value` (already checked, `exit::efer`) over
/// `current`: SVME stays set (VMRUN refuses a guest without it) and LMA stays the CPU's
/// (it sets it when paging turns on; WRMSR cannot change it).
pub fn vmcb_efer(value: u64, current: u64) -> u64 {
    (value & !EFER_LMA) | (current & EFER_LMA) | EFER_SVME
}

/// Control-area settings of one vCPU.
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    pub asid: u32,
    pub ncr3: u64,
    pub iopm_pa: u64,
    pub msrpm_pa: u64,
    /// Test guests: HLT ends them; the primary halts natively.
    pub intercept_hlt: bool,
    /// External interrupts exit (a test partition's deadline timer); the primary takes its
    /// own natively.
    pub intercept_intr: bool,
    /// An untrusted guest (a test partition): it also gets the intercepts the primary does
    /// without (see [`init_controls`]).
    pub untrusted: bool,
}

/// #MC's bit in the exception intercepts (vector 18, exit code 0x52).
pub const EXCEPTION_MC: u32 = 1 << 18;

/// The intercepts of one guest. Everyone: CPUID, port and MSR maps, shutdown,
/// every SVM instruction, XSETBV, INVD and WBINVD (the hypervisor decides what
/// they do: `exit::handler`), and NMIs. Untrusted guests (test partitions) also:
/// RDPMC (counters count the host too), MONITOR/MWAIT and #MC (reported as
/// the partition's stop). The primary keeps RDPMC (perf), MONITOR/MWAIT (its
/// idle loop) and its own #MC handling native.
pub fn init_controls(v: &mut Vmcb, c: &Controls) {
    // NMIs exit for everyone: a kick from another CPU, or one the run loop re-injects.
    let mut m1 = misc1::CPUID
        | misc1::IOIO_PROT
        | misc1::MSR_PROT
        | misc1::SHUTDOWN
        | misc1::NMI
        | misc1::INVD;
    let mut m2 = misc2::ALL_SVM | misc2::XSETBV | misc2::WBINVD;
    if c.intercept_hlt {
        m1 |= misc1::HLT;
    }
    if c.untrusted {
        m1 |= misc1::RDPMC;
        m2 |= misc2::MONITOR | misc2::MWAIT;
    }
    if c.intercept_intr {
        m1 |= misc1::INTR;
        // V_INTR_MASKING: physical interrupts follow the host's IF at VMRUN, not the guest's,
        // so they exit even while the guest runs with interrupts off.
        v.write_u32(ctrl::VINTR, 1 << 24);
    }
    v.write_u32(ctrl::INTERCEPT_MISC1, m1);
    // VMRUN must be intercepted (a consistency check); the others keep
    // guests from using SVM at all, VMMCALL is the hypercall. XSETBV exits so
    // that each guest's XCR0 is its own (`crate::xcr0`).
    v.write_u32(ctrl::INTERCEPT_MISC2, m2);
    v.write_u32(
        ctrl::INTERCEPT_EXCEPTIONS,
        if c.untrusted { EXCEPTION_MC } else { 0 },
    );
    v.write_u64(ctrl::IOPM_BASE_PA, c.iopm_pa);
    v.write_u64(ctrl::MSRPM_BASE_PA, c.msrpm_pa);
    v.write_u32(ctrl::GUEST_ASID, c.asid);
    v.write_u8(ctrl::TLB_CONTROL, tlb::FLUSH_ALL);
    v.write_u64(ctrl::NP_ENABLE, 1);
    v.write_u64(ctrl::N_CR3, c.ncr3);
    // No state is cached between runs: every VMRUN reloads everything.
    v.write_u32(ctrl::CLEAN_BITS, 0);
}

/// 64-bit, ring 0, paging on, interrupts off, at `start`.
pub fn init_test_guest_state(v: &mut Vmcb, start: &GuestStart) {
    let (code, data, gdtr) = match start.segments {
        None => (Segment::CODE64, Segment::DATA, Segment::default()),
        Some(b) => (
            Segment {
                selector: b.code,
                ..Segment::CODE64
            },
            Segment {
                selector: b.data,
                ..Segment::DATA
            },
            Segment {
                selector: 0,
                attrib: 0,
                limit: b.gdt_limit as u32,
                base: b.gdt_base,
            },
        ),
    };
    v.set_segment(save::CS, code);
    for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
        v.set_segment(seg, data);
    }
    v.set_segment(save::TR, Segment::TSS64);
    v.set_segment(save::LDTR, Segment::default());
    // No IDT: any exception in the guest becomes a triple fault, which the
    // hypervisor reports and contains.
    v.set_segment(save::GDTR, gdtr);
    v.set_segment(save::IDTR, Segment::default());
    v.write_u8(save::CPL, 0);
    v.write_u64(save::EFER, EFER_LME | EFER_LMA | EFER_NXE | EFER_SVME);
    // PG | WP | NE | ET | MP | PE
    v.write_u64(save::CR0, 0x8001_0033);
    v.write_u64(save::CR4, 0x20); // PAE
    v.write_u64(save::CR3, start.cr3);
    v.write_u64(save::RFLAGS, 0x2);
    v.write_u64(save::RIP, start.rip);
    v.write_u64(save::RSP, start.rsp);
    v.write_u64(save::RAX, 0);
    v.write_u64(save::DR6, 0xffff_0ff0);
    v.write_u64(save::DR7, 0x400);
    v.write_u64(save::G_PAT, DEFAULT_PAT);
}

/// The state INIT leaves (SDM vol. 3A table 10-1, APM 14.1.3), waiting for a start-up IPI:
/// real mode at F000:FFF0 (CS base 0xFFFF_0000), caches disabled, EFER.SVME only (VMRUN
/// needs it; the guest reads EFER without it).
pub fn init_reset_state(v: &mut Vmcb) {
    use crate::vcpu::init_state;
    let data = Segment {
        selector: 0,
        attrib: 0x93,
        limit: init_state::SEGMENT_LIMIT,
        base: 0,
    };
    v.set_segment(
        save::CS,
        Segment {
            selector: init_state::CS_SELECTOR,
            attrib: 0x9b,
            limit: init_state::SEGMENT_LIMIT,
            base: init_state::CS_BASE,
        },
    );
    for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
        v.set_segment(seg, data);
    }
    v.set_segment(
        save::LDTR,
        Segment {
            selector: 0,
            attrib: 0x82,
            limit: init_state::SEGMENT_LIMIT,
            base: 0,
        },
    );
    v.set_segment(
        save::TR,
        Segment {
            selector: 0,
            attrib: 0x8b,
            limit: init_state::SEGMENT_LIMIT,
            base: 0,
        },
    );
    for table in [save::GDTR, save::IDTR] {
        v.set_segment(
            table,
            Segment {
                selector: 0,
                attrib: 0,
                limit: init_state::SEGMENT_LIMIT,
                base: 0,
            },
        );
    }
    v.write_u8(save::CPL, 0);
    v.write_u64(save::EFER, EFER_SVME);
    v.write_u64(save::CR0, init_state::CR0);
    v.write_u64(save::CR3, 0);
    v.write_u64(save::CR4, 0);
    v.write_u64(save::RFLAGS, init_state::RFLAGS);
    v.write_u64(save::RIP, init_state::RIP);
    v.write_u64(save::RSP, 0);
    v.write_u64(save::RAX, 0);
    v.write_u64(save::DR6, 0xffff_0ff0);
    v.write_u64(save::DR7, init_state::DR7);
    v.write_u64(save::G_PAT, DEFAULT_PAT);
}

/// A start-up IPI with `vector` to a vCPU in the INIT state: CS = vector << 8, base
/// vector << 12, IP 0.
pub fn sipi_state(v: &mut Vmcb, vector: u8) {
    let (selector, base) = crate::vcpu::sipi_cs(vector);
    let mut cs = v.segment(save::CS);
    cs.selector = selector;
    cs.base = base;
    v.set_segment(save::CS, cs);
    v.write_u64(save::RIP, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_state_pass_the_vmrun_checks_we_can_see() {
        let mut page = [0u8; 4096];
        let mut v = Vmcb(&mut page);
        let c = Controls {
            asid: 2,
            ncr3: 0x7000,
            iopm_pa: 0x10000,
            msrpm_pa: 0x20000,
            intercept_hlt: true,
            intercept_intr: true,
            untrusted: true,
        };
        init_controls(&mut v, &c);
        init_test_guest_state(
            &mut v,
            &GuestStart {
                cr3: 0x4100_0000,
                rsp: 0x40ff_fff8,
                rip: 0x4000_0000,
                segments: None,
            },
        );
        assert_ne!(
            v.read_u32(ctrl::INTERCEPT_MISC2) & misc2::VMRUN,
            0,
            "VMRUN intercept is mandatory"
        );
        assert_ne!(
            v.read_u32(ctrl::GUEST_ASID),
            0,
            "ASID 0 belongs to the host"
        );
        assert_ne!(
            v.read_u64(save::EFER) & EFER_SVME,
            0,
            "guest EFER.SVME must be set"
        );
        assert_ne!(v.read_u32(ctrl::INTERCEPT_MISC2) & misc2::XSETBV, 0);
        assert_eq!(v.read_u64(ctrl::NP_ENABLE), 1);
        assert_eq!(v.read_u64(ctrl::N_CR3), 0x7000);
        let m1 = v.read_u32(ctrl::INTERCEPT_MISC1);
        for bit in [
            misc1::CPUID,
            misc1::HLT,
            misc1::INTR,
            misc1::NMI,
            misc1::IOIO_PROT,
            misc1::MSR_PROT,
            misc1::SHUTDOWN,
            misc1::INVD,
            misc1::RDPMC,
        ] {
            assert_ne!(m1 & bit, 0);
        }
        let m2 = v.read_u32(ctrl::INTERCEPT_MISC2);
        for bit in [misc2::WBINVD, misc2::MONITOR, misc2::MWAIT] {
            assert_ne!(m2 & bit, 0);
        }
        assert_eq!(v.read_u32(ctrl::INTERCEPT_EXCEPTIONS), EXCEPTION_MC);
        // long mode: CS.L set and CS.D clear; CR0.PG with CR4.PAE and PE
        let cs = v.segment(save::CS);
        assert_eq!(cs.attrib & 0x600, 0x200);
        let cr0 = v.read_u64(save::CR0);
        assert_eq!(cr0 & 0x8000_0001, 0x8000_0001);
        assert_ne!(v.read_u64(save::CR4) & 0x20, 0);
        assert_eq!(v.read_u64(save::RIP), 0x4000_0000);
        assert_eq!(v.read_u64(save::RSP), 0x40ff_fff8);
    }

    /// The SVM guest's EFER holds SVME underneath, but no guest (the primary included, whose
    /// EFER reads exit like everyone's) reads it back, and a write cannot clear it.
    #[test]
    fn svme_is_kept_in_the_vmcb_and_hidden_from_the_guest() {
        let long = EFER_LME | EFER_LMA | EFER_NXE | 1;
        let vmcb = long | EFER_SVME;
        assert_eq!(guest_efer(vmcb), long);
        assert_eq!(
            vmcb_efer(guest_efer(vmcb), vmcb),
            vmcb,
            "read, write back: same"
        );
        assert_eq!(
            vmcb_efer(0, vmcb),
            EFER_LMA | EFER_SVME,
            "LMA and SVME stay"
        );
        assert_eq!(
            vmcb_efer(EFER_LME | EFER_LMA, EFER_SVME),
            EFER_LME | EFER_SVME
        );
    }

    #[test]
    fn init_then_sipi_starts_in_real_mode_at_the_vector() {
        let mut page = [0u8; 4096];
        let mut v = Vmcb(&mut page);
        init_reset_state(&mut v);
        assert_eq!(v.read_u64(save::CR0) & 1, 0, "real mode");
        assert_eq!(v.read_u64(save::EFER), EFER_SVME, "VMRUN needs SVME");
        assert_eq!(v.segment(save::CS).base, 0xffff_0000);
        assert_eq!(v.read_u64(save::RIP), 0xfff0);
        sipi_state(&mut v, 0x9a);
        let cs = v.segment(save::CS);
        assert_eq!((cs.selector, cs.base), (0x9a00, 0x9a000));
        assert_eq!(v.read_u64(save::RIP), 0);
        assert_eq!(cs.attrib, 0x9b, "a present, readable code segment");
    }

    /// Review M2: the primary still exits on INVD and WBINVD (the host writes back for
    /// it, never discards), but keeps RDPMC, MONITOR/MWAIT and #MC native.
    #[test]
    fn the_primary_keeps_its_performance_paths_native() {
        let mut page = [0u8; 4096];
        let mut v = Vmcb(&mut page);
        let c = Controls {
            asid: 1,
            ncr3: 0x7000,
            iopm_pa: 0x10000,
            msrpm_pa: 0x20000,
            intercept_hlt: false,
            intercept_intr: false,
            untrusted: false,
        };
        init_controls(&mut v, &c);
        let (m1, m2) = (
            v.read_u32(ctrl::INTERCEPT_MISC1),
            v.read_u32(ctrl::INTERCEPT_MISC2),
        );
        assert_ne!(m1 & misc1::INVD, 0);
        assert_ne!(m2 & misc2::WBINVD, 0);
        assert_ne!(m1 & misc1::NMI, 0);
        assert_eq!(m1 & (misc1::RDPMC | misc1::HLT | misc1::INTR), 0);
        assert_eq!(m2 & (misc2::MONITOR | misc2::MWAIT), 0);
        assert_eq!(v.read_u32(ctrl::INTERCEPT_EXCEPTIONS), 0);
    }
}
