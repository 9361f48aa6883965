//! [`Backend`] for Intel VMX: EPT tables (memory types from the MTRRs), MSR and I/O bitmaps,
//! per-CPU pages (VMXON region and the one VMCS whichever vCPU runs on the CPU uses), and
//! [`VmxVcpu`]s.

use super::bitmaps;
use super::controls::{self, VmxCapabilities};
use super::ept::{Ept, EptCaps, EptPerms};
use super::instructions as vmx;
use super::memtype::Mtrrs;
use super::vcpu::{Bitmaps, VcpuSetup, VmxCpu, VmxVcpu};
use crate::hv_println;
use crate::launch::backend::{
    msr, primary_ports, Backend, MapRange, PermKind, SecondLevelEdit, Start, VcpuIntercepts,
};
use crate::launch::LaunchHost;
use crate::mem::identity::IdentityMem;
use crate::mem::second_level::{Mapping, Perm, SecondLevel};
use crate::platform::instructions::rdmsr;
use crate::platform::sync::SpinLock;
use core::cell::UnsafeCell;
use core::fmt::Write;
use nexus_abi::cpuid::Transport;

/// Frames of one CPU: the VMXON region, the VMCS, and a GDT and TSS in case the CPU has no
/// task register of its own (VMX host state needs one).
const CPU_PAGES: u64 = 4;

/// The VMX backend, once the CPU was checked.
pub struct Vmx {
    ept_caps: EptCaps,
    mtrrs: Mtrrs,
}

/// One partition's EPT and the frames it may still grow by.
pub struct VmxTable {
    ept: Ept,
    pool: SpinLock<IdentityMem>,
}

/// One CPU's pages, and its VMX state once [`Backend::enable`] ran there.
pub struct VmxCpuPages {
    pool: u64,
    vmcs: u64,
    cpu: UnsafeCell<Option<VmxCpu>>,
}

// SAFETY: `cpu` is written once by `enable` and read by `vcpu`, both on the CPU these pages
// belong to only.
unsafe impl Sync for VmxCpuPages {}

impl SecondLevel<IdentityMem> for VmxTable {
    fn translate_gpa(&self, mem: &mut IdentityMem, gpa: u64) -> Option<Mapping> {
        self.ept.translate_gpa(mem, gpa)
    }
}

impl SecondLevelEdit for VmxTable {
    fn map_page(&self, gpa: u64, hpa: u64, perm: Perm) -> Result<(), &'static str> {
        let mut pool = self.pool.lock();
        self.ept
            .add_leaf(&mut *pool, gpa, hpa, 0, perm.into())
            .map_err(|_| "no EPT frame left, or mapped already")
    }

    fn map_large(&self, gpa: u64, hpa: u64, perm: Perm) -> Result<(), &'static str> {
        let mut pool = self.pool.lock();
        self.ept
            .add_leaf(&mut *pool, gpa, hpa, 1, perm.into())
            .map_err(|_| "no EPT frame left, or mapped already")
    }
}

fn zeroed(host: &mut dyn LaunchHost, pages: usize) -> Result<u64, &'static str> {
    host.alloc_pages(pages)
        .map_err(|_| "out of hypervisor pages")
}

impl Backend for Vmx {
    type Table = VmxTable;
    type Perms = Bitmaps;
    type CpuPages = VmxCpuPages;
    type Vcpu = VmxVcpu;
    const TRANSPORT: Transport = Transport::Vmcall;
    const NAME: &'static str = "vmx";

    fn probe() -> Result<Self, &'static str> {
        if vmx::cpuid(1, 0)[2] & (1 << 5) == 0 {
            return Err("the CPU reports neither SVM nor VMX");
        }
        // SAFETY: CPUID reported VMX just above; `read` touches optional MSRs only when the
        // processor says they exist.
        let caps = VmxCapabilities::read(|m| unsafe { rdmsr(m) });
        let ctl = controls::nexus_controls(&caps).map_err(|_| {
            hv_println!("vmx: the CPU lacks controls NexusOS needs (EPT, VPID, NMI exiting)");
            "missing VM-execution controls"
        })?;
        let ept_caps = EptCaps(caps.ept_vpid);
        hv_println!(
            "vmx: VMCS revision {:#x}, TRUE controls {}, EPT 2M={} 1G={} INVEPT={} INVVPID={}; \
             controls pin={:#x} proc={:#x} proc2={:#x} exit={:#x} entry={:#x}",
            caps.revision_id(),
            if caps.has_true_controls() {
                "yes"
            } else {
                "no"
            },
            ept_caps.pages_2m(),
            ept_caps.pages_1g(),
            ept_caps.invept(),
            ept_caps.invvpid(),
            ctl.pin,
            ctl.proc,
            ctl.proc2,
            ctl.exit,
            ctl.entry
        );
        let phys_bits = vmx::cpuid(0x8000_0008, 0)[0] as u8;
        // SAFETY: the MTRR MSRs exist on every CPU with VMX.
        let mtrrs = Mtrrs::read(|m| unsafe { rdmsr(m) }, phys_bits);
        hv_println!(
            "vmx: MTRRs {}, default type {}, {} variable range(s); EPT memory types follow them",
            if mtrrs.enabled { "enabled" } else { "disabled" },
            mtrrs.default_type.short(),
            mtrrs.variable_count
        );
        Ok(Vmx { ept_caps, mtrrs })
    }

    fn huge_pages(&self) -> bool {
        self.ept_caps.pages_1g()
    }

    fn build_table(
        &self,
        host: &mut dyn LaunchHost,
        ranges: &[MapRange],
        spare: u64,
    ) -> Result<VmxTable, &'static str> {
        // As for NPT: two frames per range edge, the upper levels, 64 PDs without 1 GiB
        // pages; memory-type boundaries of the MTRRs may split pages further.
        let frames = 16
            + 6 * ranges.len() as u64
            + 64
            + 2 * self.mtrrs.variable_count as u64
            + spare
            + if ranges.len() > 8 { 1024 } else { 64 };
        let pool = zeroed(host, frames as usize)?;
        // SAFETY: the pool was just allocated for this table alone.
        let mut mem = unsafe { IdentityMem::new(pool, frames) };
        let mut ept = Ept::new(&mut mem, self.ept_caps).map_err(|_| "out of EPT frames")?;
        for r in ranges {
            ept.map_identity(
                &mut mem,
                r.range.start,
                r.range.size(),
                EptPerms::from(r.perm),
                &self.mtrrs,
            )
            .map_err(|_| "cannot map a range in the EPT (out of frames?)")?;
        }
        Ok(VmxTable {
            ept,
            pool: SpinLock::new(mem),
        })
    }

    fn describe_table(&self, t: &VmxTable, out: &mut dyn Write) {
        let first = t.ept.stats;
        let _ = write!(
            out,
            "root {:#x}, {} x 4 KiB, {} x 2 MiB, {} x 1 GiB, MTRR memory types",
            t.ept.pml4(),
            first.pages_4k,
            first.pages_2m,
            first.pages_1g
        );
    }

    fn build_perms(
        &self,
        host: &mut dyn LaunchHost,
        kind: PermKind,
    ) -> Result<Bitmaps, &'static str> {
        let msr_pa = zeroed(host, 1)?;
        let io_a = zeroed(host, 1)?;
        let io_b = zeroed(host, 1)?;
        // SAFETY: fresh, zeroed, identity-mapped hypervisor pages.
        let (m, a, b) = unsafe {
            (
                &mut *(msr_pa as *mut bitmaps::Page),
                &mut *(io_a as *mut bitmaps::Page),
                &mut *(io_b as *mut bitmaps::Page),
            )
        };
        match kind {
            PermKind::Test => {
                m.fill(0xff);
                a.fill(0xff);
                b.fill(0xff);
            }
            PermKind::Primary | PermKind::Proxy => {
                if kind == PermKind::Proxy {
                    // No write of the firmware reaches a CPU it does not own.
                    m[2048..].fill(0xff);
                }
                for &(first, last, read, write) in msr::PRIMARY {
                    for id in first..=last {
                        let (r, w) = (
                            read || bitmaps::msr_exits(m, id, false),
                            write || bitmaps::msr_exits(m, id, true),
                        );
                        bitmaps::set_msr(m, id, r, w);
                    }
                }
                for (first, last) in primary_ports() {
                    for port in first..=last {
                        bitmaps::set_port(a, b, port, true);
                    }
                }
            }
        }
        Ok(Bitmaps {
            msr: msr_pa,
            io_a,
            io_b,
        })
    }

    fn cpu_pages(&self, host: &mut dyn LaunchHost) -> Result<VmxCpuPages, &'static str> {
        let pool = zeroed(host, CPU_PAGES as usize)?;
        Ok(VmxCpuPages {
            pool,
            vmcs: zeroed(host, 1)?,
            cpu: UnsafeCell::new(None),
        })
    }

    unsafe fn enable(&self, cpu: &'static VmxCpuPages) -> Result<(), &'static str> {
        // SAFETY: this pool is the running CPU's alone, identity mapped.
        let mut mem = unsafe { IdentityMem::new(cpu.pool, CPU_PAGES) };
        // SAFETY: ring 0, interrupts off; a GDT copy keeps the current selectors.
        if unsafe { super::host::ensure_task_register(&mut mem) }.is_none() {
            return Err("no task register");
        }
        // SAFETY: on this CPU with its host environment (the caller's contract), with frames
        // from its pool.
        let v = unsafe { VmxCpu::enable(&mut mem) }.map_err(|e| {
            hv_println!("vmx: {e}");
            "VMXON failed"
        })?;
        // SAFETY: only this CPU touches its pages' VMX state.
        unsafe { *cpu.cpu.get() = Some(v) };
        Ok(())
    }

    unsafe fn vcpu(
        &self,
        cpu: &'static VmxCpuPages,
        table: &'static VmxTable,
        perms: &'static Bitmaps,
        tag: u16,
        start: Start,
        intercepts: VcpuIntercepts,
    ) -> Result<VmxVcpu, &'static str> {
        // SAFETY: only this CPU touches its pages' VMX state; `enable` ran here.
        let Some(v) = (unsafe { &*cpu.cpu.get() }) else {
            return Err("VMX is not on for this CPU");
        };
        let setup = VcpuSetup {
            vmcs: cpu.vmcs,
            eptp: table.ept.eptp(),
            vpid: tag,
            bitmaps: *perms,
            hlt: intercepts.hlt,
            untrusted: intercepts.untrusted,
            interrupts: intercepts.interrupts,
        };
        // SAFETY: VMX root operation on this CPU with its host environment; the VMCS page is
        // this CPU's and no earlier vCPU of it runs any more; table and maps live for good.
        let made = unsafe {
            match start {
                Start::Long(s) => VmxVcpu::new_long_mode(v, &setup, s),
                Start::Reset => VmxVcpu::new_reset(v, &setup),
                Start::Current {
                    fw,
                    rip,
                    rsp,
                    rflags,
                } => VmxVcpu::new_current(v, &setup, &fw, rip, rsp, rflags),
            }
        };
        made.map_err(|e| {
            hv_println!("vmx: vCPU set-up: {e}");
            "VMCS set-up failed"
        })
    }
}
