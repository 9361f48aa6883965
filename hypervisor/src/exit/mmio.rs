//! Second-level faults: a store to a trapped page (the primary's xAPIC registers, the MMIO
//! hypercall doorbell), an access to memory the partition does not own, or isolation.
//!
//! For a trapped store the hypervisor fetches and decodes the instruction itself
//! ([`crate::insn::mmio`]): neither QEMU's SVM (no decode assists) nor VMX (no instruction
//! length for EPT violations) says what was written. The store is emulated and RIP steps
//! over it.

use super::handler::{hypercall_from_registers, ExitContext, ExitHost, Flow};
use super::Access;
use crate::insn::mmio::{decode_store, CodeSize, Source};
use crate::insn::MAX_LEN;
use crate::mem::guest::{GuestMemory, Paging};
use crate::mem::PhysMem;
use crate::partition::StopReason;
use crate::vcpu::{vector, CpuMode, Gpr, Vcpu};

/// The only instruction the doorbell takes: `mov dword [r11], eax` (docs/abi.md).
pub const DOORBELL_STORE: [u8; 3] = [0x41, 0x89, 0x03];

/// A second-level fault at `gpa`.
pub(super) fn page_fault<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    gpa: u64,
    access: Access,
    cx: &mut ExitContext<'_, M, H>,
) -> Flow {
    let page = gpa & !0xfff;
    if access.write && cx.host.apic_page() == Some(page) {
        return apic_store(vcpu, gpa & 0xfff, cx);
    }
    if access.write && cx.host.doorbell() == Some(page) {
        return doorbell(vcpu, cx);
    }
    if cx.host.foreign_access(gpa, access) {
        return Flow::Continue;
    }
    Flow::Stop(StopReason::Isolation { gpa, access })
}

/// The bytes at the guest's RIP (up to 15, fewer at the end of its mapped code) and the
/// code size to decode them with; `None` when they cannot be read (32-bit paging, or not
/// mapped).
fn fetch<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &V,
    cx: &mut ExitContext<'_, M, H>,
) -> Option<([u8; MAX_LEN], usize, CodeSize)> {
    let (paging, code) = match vcpu.mode() {
        CpuMode::Real => (Paging::None, CodeSize::Bits16),
        CpuMode::Protected { paging: true, .. } => return None,
        CpuMode::Protected { cs_db, .. } => (
            Paging::None,
            if cs_db {
                CodeSize::Bits32
            } else {
                CodeSize::Bits16
            },
        ),
        CpuMode::Long { cs_l } => (
            Paging::long(vcpu.cr3(), vcpu.cr4()),
            if cs_l {
                CodeSize::Bits64
            } else {
                CodeSize::Bits32
            },
        ),
    };
    let at = vcpu.cs_base().wrapping_add(vcpu.rip());
    let mut g = GuestMemory {
        second_level: cx.second_level,
        mem: cx.mem,
        paging,
    };
    let mut buf = [0u8; MAX_LEN];
    // An instruction may end right before an unmapped page: try what fits in this one.
    let in_page = (0x1000 - (at & 0xfff)) as usize;
    for n in [MAX_LEN, in_page.min(MAX_LEN)] {
        if g.read(at, &mut buf[..n]).is_ok() {
            return Some((buf, n, code));
        }
    }
    None
}

/// A store to an xAPIC register: emulated through the host (`ExitHost::apic_write`).
fn apic_store<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    offset: u64,
    cx: &mut ExitContext<'_, M, H>,
) -> Flow {
    let rip = vcpu.rip();
    let Some((bytes, n, code)) = fetch(vcpu, cx) else {
        return Flow::Stop(StopReason::Undecodable { rip });
    };
    let Ok(store) = decode_store(&bytes[..n], code) else {
        return Flow::Stop(StopReason::Undecodable { rip });
    };
    let reg = match store.source {
        Source::Reg { gpr, .. } => vcpu.gpr(Gpr::from_index(gpr)),
        Source::Imm(_) => 0,
    };
    // The registers take aligned 32-bit accesses; anything else is dropped (SDM 11.4.1).
    if store.size == 4 && offset & 0xf == 0 {
        let old = cx
            .host
            .apic_write(offset, store.value(reg) as u32, store.exchange);
        if let (true, Source::Reg { gpr, .. }) = (store.exchange, store.source) {
            vcpu.set_gpr(Gpr::from_index(gpr), old as u64);
        }
    }
    vcpu.set_rip(rip.wrapping_add(store.len as u64));
    Flow::Continue
}

/// The MMIO hypercall doorbell: the call in the registers, at any privilege level (the page
/// is reachable only by code the guest OS lets map it: root, through /dev/mem).
fn doorbell<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    cx: &mut ExitContext<'_, M, H>,
) -> Flow {
    let rip = vcpu.rip();
    let exact = fetch(vcpu, cx).is_some_and(|(bytes, n, code)| {
        code == CodeSize::Bits64 && n >= 3 && bytes[..3] == DOORBELL_STORE
    });
    if !exact {
        vcpu.inject_exception(vector::GP, Some(0));
        return Flow::Continue;
    }
    if let Some(stop) = hypercall_from_registers(vcpu, cx) {
        return Flow::Stop(stop);
    }
    vcpu.set_rip(rip.wrapping_add(DOORBELL_STORE.len() as u64));
    Flow::Continue
}
