//! [`Backend`] for AMD SVM: NPT tables, MSR and I/O permission maps, per-CPU pages (host
//! save area, the host's VMSAVE area, one VMCB and run page reused by whichever vCPU runs on
//! the CPU), and [`SvmVcpu`]s.

use super::bitmaps::{IoBitmap, MsrBitmap, IOPM_SIZE, MSRPM_SIZE};
use super::features::SvmFeatures;
use super::guest_vmcb::{init_controls, init_reset_state, init_test_guest_state, Controls};
use super::run_state::RunPage;
use super::vcpu::SvmVcpu;
use super::vmcb::{save, Segment, Vmcb};
use crate::hv_println;
use crate::launch::backend::{
    msr, primary_ports, Backend, MapRange, PermKind, SecondLevelEdit, Start, VcpuIntercepts,
};
use crate::launch::LaunchHost;
use crate::mem::identity::IdentityMem;
use crate::mem::second_level::{Mapping, Perm, SecondLevel};
use crate::npt::{Npt, NptOptions};
use crate::platform::instructions;
use crate::platform::sync::SpinLock;
use core::fmt::Write;
use nexus_abi::cpuid::Transport;

/// The SVM backend, once the CPU was checked.
pub struct Svm {
    features: SvmFeatures,
    /// Host EFER.NXE: NX may be set in NPT entries.
    nx: bool,
    huge: bool,
}

/// One partition's NPT and the frames it may still grow by.
pub struct SvmTable {
    npt: Npt,
    pool: SpinLock<IdentityMem>,
}

/// MSR and I/O permission maps (physical addresses).
pub struct SvmPerms {
    msrpm_pa: u64,
    iopm_pa: u64,
}

/// One CPU's pages.
pub struct SvmCpu {
    hsave_pa: u64,
    host_vmcb_pa: u64,
    vmcb_pa: u64,
    run_pa: u64,
}

impl SecondLevel<IdentityMem> for SvmTable {
    fn translate_gpa(&self, mem: &mut IdentityMem, gpa: u64) -> Option<Mapping> {
        self.npt.translate(mem, gpa)
    }
}

impl SecondLevelEdit for SvmTable {
    fn map_page(&self, gpa: u64, hpa: u64, perm: Perm) -> Result<(), &'static str> {
        let mut pool = self.pool.lock();
        self.npt
            .add_leaf(&mut *pool, gpa, hpa, 0, perm)
            .map_err(|_| "no NPT frame left, or mapped already")
    }

    fn map_large(&self, gpa: u64, hpa: u64, perm: Perm) -> Result<(), &'static str> {
        let mut pool = self.pool.lock();
        self.npt
            .add_leaf(&mut *pool, gpa, hpa, 1, perm)
            .map_err(|_| "no NPT frame left, or mapped already")
    }
}

fn zeroed(host: &mut dyn LaunchHost, pages: usize) -> Result<u64, &'static str> {
    host.alloc_pages(pages)
        .map_err(|_| "out of hypervisor pages")
}

impl Backend for Svm {
    type Table = SvmTable;
    type Perms = SvmPerms;
    type CpuPages = SvmCpu;
    type Vcpu = SvmVcpu<'static, IdentityMem>;
    const TRANSPORT: Transport = Transport::Vmmcall;
    const NAME: &'static str = "svm";

    fn probe() -> Result<Self, &'static str> {
        let r = core::arch::x86_64::__cpuid(0x8000_000a);
        let features = SvmFeatures::from_cpuid(r.ebx, r.edx);
        hv_println!(
            "svm: {} ASIDs, npt={}, nrip-save={}, vmcb-clean={}, flush-by-asid={}, decode-assists={}{}",
            features.asids,
            features.npt,
            features.nrip_save,
            features.vmcb_clean,
            features.flush_by_asid,
            features.decode_assists,
            if features.nrip_save {
                ""
            } else {
                " (instruction lengths decoded by the hypervisor)"
            }
        );
        if !features.npt {
            return Err("SVM without nested paging is not supported");
        }
        // SAFETY: reading EFER at CPL 0.
        let nx = unsafe { instructions::rdmsr(super::svm::MSR_EFER) } & (1 << 11) != 0;
        let huge = core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0;
        Ok(Svm { features, nx, huge })
    }

    fn huge_pages(&self) -> bool {
        self.huge
    }

    fn build_table(
        &self,
        host: &mut dyn LaunchHost,
        ranges: &[MapRange],
        spare: u64,
    ) -> Result<SvmTable, &'static str> {
        // Two frames per range edge at most (a PD and a PT), the root and PDPT, 64 PDs when
        // 1 GiB pages are missing, and the spare frames.
        let frames = 8 + 4 * ranges.len() as u64 + 64 + spare;
        let pool = zeroed(host, frames as usize)?;
        // SAFETY: the pool was just allocated for this table alone.
        let mut mem = unsafe { IdentityMem::new(pool, frames) };
        let mut npt = Npt::new(
            &mut mem,
            NptOptions {
                huge_pages: self.huge,
                nx: self.nx,
            },
        )
        .map_err(|_| "out of NPT frames")?;
        for r in ranges {
            npt.map_identity(&mut mem, r.range.start, r.range.size(), r.perm)
                .map_err(|_| "cannot map a range in the NPT (out of frames?)")?;
        }
        Ok(SvmTable {
            npt,
            pool: SpinLock::new(mem),
        })
    }

    fn describe_table(&self, t: &SvmTable, out: &mut dyn Write) {
        let _ = write!(
            out,
            "root {:#x}, {} x 4 KiB, {} x 2 MiB, {} x 1 GiB",
            t.npt.root(),
            t.npt.leaves[0],
            t.npt.leaves[1],
            t.npt.leaves[2]
        );
    }

    fn build_perms(
        &self,
        host: &mut dyn LaunchHost,
        kind: PermKind,
    ) -> Result<SvmPerms, &'static str> {
        let msrpm_pa = zeroed(host, MSRPM_SIZE / 4096)?;
        let iopm_pa = zeroed(host, IOPM_SIZE / 4096)?;
        // SAFETY: fresh, zeroed, identity-mapped hypervisor pages of exactly these sizes.
        let (msrs, ports) = unsafe {
            (
                &mut *(msrpm_pa as *mut MsrBitmap),
                &mut *(iopm_pa as *mut IoBitmap),
            )
        };
        match kind {
            // Test partitions get no MSR and no port: everything exits, and the generic
            // handler allows EFER, the emulated COM1, and nothing else.
            PermKind::Test => {
                msrs.0.fill(0xff);
                ports.0.fill(0xff);
            }
            PermKind::Primary | PermKind::Proxy => {
                for &(first, last, read, write) in msr::PRIMARY {
                    for m in first..=last {
                        msrs.set(m, read, write);
                    }
                }
                if kind == PermKind::Proxy {
                    // No write of the firmware reaches a CPU it does not own.
                    for byte in msrs.0.iter_mut() {
                        *byte |= 0xaa;
                    }
                }
                msrs.set(super::svm::MSR_VM_CR, true, true);
                msrs.set(super::svm::MSR_VM_HSAVE_PA, true, true);
                for (first, last) in primary_ports() {
                    ports.set_range(first, last, true);
                }
            }
        }
        Ok(SvmPerms { msrpm_pa, iopm_pa })
    }

    fn cpu_pages(&self, host: &mut dyn LaunchHost) -> Result<SvmCpu, &'static str> {
        Ok(SvmCpu {
            hsave_pa: zeroed(host, 1)?,
            host_vmcb_pa: zeroed(host, 1)?,
            vmcb_pa: zeroed(host, 1)?,
            run_pa: zeroed(host, 1)?,
        })
    }

    unsafe fn enable(&self, cpu: &'static SvmCpu) -> Result<(), &'static str> {
        // SAFETY: the caller's contract: this CPU, CPL 0; the host save page is its alone.
        unsafe { super::svm::enable(cpu.hsave_pa) }.map_err(|_| "SVM is disabled by the firmware")
    }

    unsafe fn vcpu(
        &self,
        cpu: &'static SvmCpu,
        table: &'static SvmTable,
        perms: &'static SvmPerms,
        tag: u16,
        start: Start,
        intercepts: VcpuIntercepts,
    ) -> Result<Self::Vcpu, &'static str> {
        if tag as u32 >= self.features.asids {
            return Err("no ASID left for this partition");
        }
        // SAFETY: the VMCB and run page are this CPU's, which runs one vCPU at a time; the
        // previous one (if any) is finished.
        let (vmcb, rp) = unsafe {
            (
                &mut *(cpu.vmcb_pa as *mut [u8; 4096]),
                &mut *(cpu.run_pa as *mut RunPage),
            )
        };
        vmcb.fill(0);
        let mut v = Vmcb(vmcb);
        init_controls(
            &mut v,
            &Controls {
                asid: tag as u32,
                ncr3: table.npt.root(),
                iopm_pa: perms.iopm_pa,
                msrpm_pa: perms.msrpm_pa,
                intercept_hlt: intercepts.hlt,
                intercept_intr: intercepts.interrupts,
                untrusted: intercepts.untrusted,
            },
        );
        rp.state.guest_vmcb_pa = cpu.vmcb_pa;
        rp.state.host_vmcb_pa = cpu.host_vmcb_pa;
        rp.state.gprs.0 = [0; 16];
        rp.state.host_if = intercepts.interrupts as u64;
        let xcr0 = match start {
            Start::Long(s) => {
                init_test_guest_state(&mut v, &s);
                rp.state.gprs.0[4] = s.rsp;
                crate::xcr0::RESET
            }
            Start::Reset => {
                init_reset_state(&mut v);
                rp.state.gprs.0[2] = core::arch::x86_64::__cpuid(1).eax as u64;
                crate::xcr0::RESET
            }
            Start::Current {
                fw,
                rip,
                rsp,
                rflags,
            } => {
                // SAFETY: CPL 0 on the boot CPU; the firmware's GDT is still mapped.
                unsafe { current_state(&mut v, &fw) };
                v.write_u64(save::RIP, rip);
                v.write_u64(save::RSP, rsp);
                v.write_u64(save::RFLAGS, rflags);
                rp.state.gprs.0[4] = rsp;
                // SAFETY: CPL 0 in host mode on this CPU.
                unsafe { crate::xcr0::HostXcr0::current_or_reset() }
            }
        };
        // SAFETY: the run page and VMCB describe a valid guest; SVM is on for this CPU
        // (`enable`); both pages and the table live for good.
        Ok(unsafe {
            SvmVcpu::new(
                &mut rp.state,
                vmcb,
                self.features,
                table,
                IdentityMem::new(0, 0),
                xcr0,
                intercepts.untrusted,
            )
        })
    }
}

/// The boot CPU's firmware context as VMCB guest state (everything but RIP, RSP, RFLAGS).
///
/// # Safety
/// CPL 0; `fw`'s GDT is still identity mapped and readable up to its limit.
unsafe fn current_state(v: &mut Vmcb<'_>, fw: &crate::platform::host_cpu::FirmwareContext) {
    let (gdtr, idtr) = (fw.gdtr, fw.idtr);
    let entries = (gdtr.limit as usize + 1) / 8;
    // SAFETY: the caller's contract.
    let gdt = unsafe { core::slice::from_raw_parts(gdtr.base as *const u64, entries) };
    let seg = |selector: u16| {
        let i = (selector >> 3) as usize;
        if selector & 4 != 0 || i == 0 || i >= entries {
            Segment {
                selector,
                ..Segment::default()
            }
        } else {
            Segment::from_descriptor(selector, gdt[i], gdt.get(i + 1).copied().unwrap_or(0))
        }
    };
    let [cs, ss, ds, es, fs, gs] = fw.selectors;
    for (off, s) in [
        (save::CS, cs),
        (save::SS, ss),
        (save::DS, ds),
        (save::ES, es),
        (save::FS, fs),
        (save::GS, gs),
        (save::TR, fw.tr),
        (save::LDTR, fw.ldtr),
    ] {
        v.set_segment(off, seg(s));
    }
    // In 64-bit mode the FS/GS bases live in MSRs, not in the GDT.
    let m = fw.msrs;
    for (off, base) in [(save::FS, m.fs_base), (save::GS, m.gs_base)] {
        let mut s = v.segment(off);
        s.base = base;
        v.set_segment(off, s);
    }
    v.set_segment(
        save::GDTR,
        Segment {
            selector: 0,
            attrib: 0,
            limit: gdtr.limit as u32,
            base: gdtr.base,
        },
    );
    v.set_segment(
        save::IDTR,
        Segment {
            selector: 0,
            attrib: 0,
            limit: idtr.limit as u32,
            base: idtr.base,
        },
    );
    v.write_u8(save::CPL, 0);
    v.write_u64(save::EFER, fw.efer | super::guest_vmcb::EFER_SVME);
    v.write_u64(save::CR0, fw.cr0);
    v.write_u64(save::CR3, fw.cr3);
    v.write_u64(save::CR4, fw.cr4);
    v.write_u64(save::DR6, 0xffff_0ff0);
    v.write_u64(save::DR7, m.dr7);
    v.write_u64(save::G_PAT, m.pat);
    for (off, value) in [
        (save::STAR, m.star),
        (save::LSTAR, m.lstar),
        (save::CSTAR, m.cstar),
        (save::SFMASK, m.sfmask),
        (save::KERNEL_GS_BASE, m.kernel_gs_base),
        (save::SYSENTER_CS, m.sysenter_cs),
        (save::SYSENTER_ESP, m.sysenter_esp),
        (save::SYSENTER_EIP, m.sysenter_eip),
    ] {
        v.write_u64(off, value);
    }
}
