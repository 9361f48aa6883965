//! The VMRUN loop of one partition on its CPU.

use super::*;
use crate::partition::Kind;
use crate::xcr0::{self, HostXcr0};

/// The exit handler's view of the CPU it runs on.
struct ApHost {
    line: LineBuffer,
}

impl ExitHost for ApHost {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line.push(&CONSOLE, b);
        }
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        CpuidResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}

/// Entry of a partition's AP (UEFI MP services procedure).
pub(super) extern "efiapi" fn ap_entry(arg: *mut c_void) {
    // SAFETY: `run` passes a leaked (never freed) SvmPartition.
    let p = unsafe { &*(arg as *const SvmPartition) };
    let stop = run_partition(p);
    // SAFETY: only this AP ran the partition; its counters are no longer borrowed.
    unsafe { p.outcome.finish(stop) };
}

fn run_partition(p: &SvmPartition) -> StopReason {
    // SAFETY: CPL 0 on this AP; the host must not take interrupts between
    // VM exits (they stay pending for the guest).
    unsafe { instructions::cli() };
    // Host mode runs on the hypervisor's own GDT, TSS, IDT and page tables,
    // so a fault in the host is reported, and the firmware's tables can change.
    // SAFETY: on this partition's CPU, CPL 0, interrupts off, after the
    // platform's host_cpu::init (HostCpu::new succeeded).
    let firmware = p.host_cpu.and_then(|h| unsafe { h.load() }.ok());
    // SAFETY: SVM was reported by CPUID; the host save page is this CPU's alone.
    let stop = match unsafe { svm::enable(p.hsave_pa) } {
        Ok(()) => vm_loop(p, firmware.is_some(), &mut |_| {}),
        Err(e) => {
            hv_println!("partition {}: cannot enable SVM: {e:?}", p.config.name);
            StopReason::SetupFailed
        }
    };
    if let Some(fw) = firmware {
        // The AP goes back to the firmware's MP loop: give it its tables back.
        // SAFETY: same CPU, interrupts off, the firmware's tables are still valid.
        unsafe { fw.restore() };
    }
    stop
}

/// Enter the guest, handle its exits, until it stops (SVM already enabled
/// on this CPU, interrupts off).
pub(super) fn vm_loop(
    p: &SvmPartition,
    own_tables: bool,
    after_exit: &mut dyn FnMut(&Stats),
) -> StopReason {
    // SAFETY: set up by `setup` for this partition; only this AP uses them now.
    let (rp, vmcb) = unsafe {
        (
            &mut *(p.run_pa as *mut RunPage),
            &mut *(p.vmcb_pa as *mut [u8; 4096]),
        )
    };
    // SAFETY: empty pools: reading and writing guest memory only, checked
    // through the partition's NPT by the callers.
    let (code_mem, mut mem) = unsafe { (IdentityMem::new(0, 0), IdentityMem::new(0, 0)) };
    // The primary keeps the firmware's XCR0; a test guest starts as after RESET.
    let xcr0 = match p.config.kind {
        // SAFETY: CPL 0 in host mode on the partition's CPU.
        Kind::Primary => unsafe { HostXcr0::current_or_reset() },
        _ => xcr0::RESET,
    };
    // SAFETY: the run state and VMCB describe the guest set up by `setup`,
    // and SVM is enabled on this CPU; `xcr0` is valid on it.
    let mut vcpu = unsafe { SvmVcpu::new(&mut rp.state, vmcb, p.features, &p.npt, code_mem, xcr0) };
    let mut host = ApHost {
        line: LineBuffer::new(p.config.name.as_str()),
    };
    // SAFETY: only this AP touches the stats until DONE is published.
    let stats = unsafe { p.outcome.stats_mut() };
    let mut cx = ExitContext {
        partition: &p.config,
        second_level: &p.npt,
        mem: &mut mem,
        host: &mut host,
        stats,
        transport: Transport::Vmmcall,
    };
    hv_println!(
        "partition {}: running on CPU {} (host mode on {} tables)",
        p.config.name,
        core::arch::x86_64::__cpuid(1).ebx >> 24, // this CPU's APIC ID
        if own_tables {
            "the hypervisor's"
        } else {
            "the firmware's"
        }
    );
    let stop = loop {
        let exit = vcpu.run();
        match handle_exit(&mut vcpu, exit, &mut cx) {
            Flow::Continue => after_exit(cx.stats),
            Flow::Stop(reason) => break reason,
            // One vCPU per SVM partition: nobody can start it again.
            Flow::WaitForSipi => break StopReason::WaitsForSipi,
        }
    };
    if host.line.pending() > 0 {
        host.line.flush(&CONSOLE);
    }
    hv_println!(
        "partition {} stopped at rip {:#x}: {stop}",
        p.config.name,
        vcpu.rip()
    );
    stop
}
