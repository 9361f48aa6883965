//! Host state for the VMCS, read from the running CPU.
//!
//! VM exits load host CS/SS/DS/ES/FS/GS/TR, GDTR/IDTR, CR0/3/4 and some MSRs
//! from the VMCS, so the values must be those of the CPU that runs the vCPU.
//! VMX requires a non-null host TR; OVMF never loads one, so when TR is 0 this
//! module installs a copy of the current GDT with a TSS appended (selectors of
//! the firmware stay valid in the copy).

use super::instructions::read_selectors;
use super::vmcs::{host16, host32, host64, hostn};
use crate::mem::PhysMem;
use crate::platform::instructions::{
    lgdt, ltr, rdmsr, read_cr0, read_cr3, read_cr4, sgdt, sidt, str, DescriptorTablePointer,
};

pub const MSR_FS_BASE: u32 = 0xC000_0100;
pub const MSR_GS_BASE: u32 = 0xC000_0101;
pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_PAT: u32 = 0x277;
pub const MSR_SYSENTER_CS: u32 = 0x174;
pub const MSR_SYSENTER_ESP: u32 = 0x175;
pub const MSR_SYSENTER_EIP: u32 = 0x176;

/// A host-state snapshot: `(field, value)` pairs ready for VMWRITE.
pub struct HostState {
    pub fields: [(u32, u64); 22],
}

/// Base of the system descriptor at `selector` in the GDT at `gdt_base`.
///
/// # Safety
/// The GDT must be mapped and `selector` must index a 16-byte system descriptor in it.
unsafe fn system_descriptor_base(gdt_base: u64, selector: u16) -> u64 {
    let p = (gdt_base + (selector & !7) as u64) as *const u64;
    // SAFETY: the caller guarantees the descriptor is readable.
    let (lo, hi) = unsafe { (p.read_unaligned(), p.add(1).read_unaligned()) };
    super::vmcs::base_from_descriptor(lo) | ((hi & 0xffff_ffff) << 32)
}

/// Make sure this CPU has a usable TR (VMX host-state requirement). Returns the
/// TR selector. Pages come from `mem` and stay allocated for the CPU's lifetime.
///
/// # Safety
/// Must run on the CPU whose GDT is being replaced, with interrupts disabled
/// or an IDT that tolerates the switch; the old GDT must be readable.
pub unsafe fn ensure_task_register(mem: &mut impl PhysMem) -> Option<u16> {
    // SAFETY: STR only reads the task register.
    let tr = unsafe { str() };
    if tr != 0 {
        return Some(tr);
    }
    // SAFETY: SGDT only stores the GDTR.
    let old = unsafe { sgdt() };
    let old_len = old.limit as u64 + 1;
    // New GDT: old entries, then a 16-byte TSS descriptor, in one page.
    if old_len + 16 > 4096 {
        return None;
    }
    let gdt = mem.alloc_frame()?;
    let tss = mem.alloc_frame()?;
    // SAFETY: the old GDT is readable for `old_len` bytes (its own limit).
    let old_bytes = unsafe { core::slice::from_raw_parts(old.base as *const u8, old_len as usize) };
    mem.write(gdt, old_bytes);
    let sel = ((old_len + 7) & !7) as u16;
    let limit: u64 = 0x67;
    // 64-bit available TSS (type 9), present.
    let lo = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x89u64 << 40)
        | (((tss >> 24) & 0xff) << 56);
    let hi = tss >> 32;
    mem.write(gdt + sel as u64, &lo.to_le_bytes());
    mem.write(gdt + sel as u64 + 8, &hi.to_le_bytes());
    // I/O map base beyond the limit: no I/O permission bitmap.
    mem.write(tss + 0x66, &0x68u16.to_le_bytes());
    let ptr = DescriptorTablePointer {
        limit: sel + 15,
        base: gdt,
    };
    // SAFETY: the new GDT holds every old descriptor at the same offset, so the
    // loaded segment registers stay valid; the TSS descriptor was just written.
    unsafe {
        lgdt(&ptr);
        ltr(sel);
    }
    Some(sel)
}

impl HostState {
    /// Read the host state of the running CPU; `exit_rip` is HOST_RIP.
    ///
    /// # Safety
    /// Must run on the CPU that will execute the vCPU, after its final GDT,
    /// IDT, TR and CR3 are loaded.
    pub unsafe fn capture(exit_rip: u64) -> Self {
        let [es, cs, ss, ds, fs, gs] = read_selectors();
        // SAFETY: reading descriptor-table registers, control registers and
        // architectural MSRs that every x86-64 CPU with VMX has.
        unsafe {
            let gdtr = sgdt();
            let idtr = sidt();
            let tr = str();
            let rpl0 = |s: u16| (s & !7) as u64;
            HostState {
                fields: [
                    (host16::ES_SELECTOR, rpl0(es)),
                    (host16::CS_SELECTOR, rpl0(cs)),
                    (host16::SS_SELECTOR, rpl0(ss)),
                    (host16::DS_SELECTOR, rpl0(ds)),
                    (host16::FS_SELECTOR, rpl0(fs)),
                    (host16::GS_SELECTOR, rpl0(gs)),
                    (host16::TR_SELECTOR, rpl0(tr)),
                    (hostn::CR0, read_cr0()),
                    (hostn::CR3, read_cr3()),
                    (hostn::CR4, read_cr4()),
                    (hostn::FS_BASE, rdmsr(MSR_FS_BASE)),
                    (hostn::GS_BASE, rdmsr(MSR_GS_BASE)),
                    (hostn::TR_BASE, system_descriptor_base(gdtr.base, tr)),
                    (hostn::GDTR_BASE, gdtr.base),
                    (hostn::IDTR_BASE, idtr.base),
                    (hostn::SYSENTER_ESP, rdmsr(MSR_SYSENTER_ESP)),
                    (hostn::SYSENTER_EIP, rdmsr(MSR_SYSENTER_EIP)),
                    (host32::SYSENTER_CS, rdmsr(MSR_SYSENTER_CS)),
                    (host64::EFER, rdmsr(MSR_EFER)),
                    (host64::PAT, rdmsr(MSR_PAT)),
                    (hostn::RIP, exit_rip),
                    // HOST_RSP is written by the entry path on every entry.
                    (hostn::RSP, 0),
                ],
            }
        }
    }
}
