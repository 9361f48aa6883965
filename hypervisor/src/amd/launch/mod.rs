//! Running a policy's partitions on SVM:
//!
//! - [`setup`]: per test partition, on the BSP: reserved memory, image,
//!   guest page tables, NPT, VMCB, permission maps, host tables;
//! - [`pages`]: the VMCB, run page and permission maps of one guest;
//! - [`ap`]: the VMRUN loop on each partition's CPU (also used by the boot
//!   CPU's host side);
//! - [`primary`]: the primary partition and the blue-pill of the boot CPU;
//! - here: the order of it all, the wait, and the summary.

mod ap;
mod pages;
mod primary;
mod setup;

use ap::ap_entry;
use pages::ControlPages;
use primary::{bluepill, setup_primary, wait_as_guest};
use setup::setup;

use crate::amd::bitmaps::{MsrBitmap, IOPM_SIZE, MSRPM_SIZE};
use crate::amd::features::SvmFeatures;
use crate::amd::guest_vmcb::{init_controls, init_test_guest_state, Controls};
use crate::amd::run_state::{FxArea, RunPage};
use crate::amd::svm;
use crate::amd::vcpu::SvmVcpu;
use crate::amd::vmcb::Vmcb;
use crate::exit::{handle_exit, ExitContext, ExitHost, Flow};
use crate::hv_println;
use crate::launch::guest_load::load_guest;
use crate::launch::outcome::{self, Outcome};
use crate::launch::tracked::Tracked;
use crate::launch::{set_up_primary, test_partitions, LaunchHost, Verdict};
use crate::mem::identity::IdentityMem;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::Plan;
use crate::partition::{PartitionConfig, StopReason};
use crate::platform::console::LineBuffer;
use crate::platform::host_cpu::HostCpu;
use crate::platform::instructions;
use crate::platform::log::CONSOLE;
use crate::platform::sync::SpinLock;
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
use nexus_abi::cpuid::{CpuidResult, Transport};
use nexus_abi::{Hypercall, HypercallArgs};
/// Page-table frames reserved per test partition's NPT.
const NPT_POOL_PAGES: u64 = 64;
/// How long the BSP waits for the test partitions.
const WAIT_LIMIT_MS: u64 = 60_000;

/// One test partition, shared between the BSP (set-up, summary) and its AP
/// (the run, handed back through `outcome`).
struct SvmPartition {
    config: PartitionConfig,
    /// The platform's host GDT/TSS/IDT/page tables for the partition's CPU
    /// (`None` if the host environment is unavailable: the firmware's are used).
    host_cpu: Option<HostCpu>,
    npt: Npt,
    features: SvmFeatures,
    vmcb_pa: u64,
    run_pa: u64,
    hsave_pa: u64,
    outcome: Outcome,
}

fn svm_features() -> SvmFeatures {
    let r = core::arch::x86_64::__cpuid(0x8000_000a);
    SvmFeatures::from_cpuid(r.ebx, r.edx)
}
/// Set up every test partition, start each on its CPU, virtualize the boot
/// CPU as the primary partition, wait for the test partitions, judge.
pub fn run(host: &mut impl LaunchHost, plan: &Plan) -> Verdict {
    let mut host = Tracked::new(host);
    let host = &mut host;
    let features = svm_features();
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
        return Verdict::fail(format_args!("SVM without nested paging is not supported"));
    }
    // SAFETY: reading EFER at CPL 0.
    let nx = unsafe { instructions::rdmsr(svm::MSR_EFER) } & (1 << 11) != 0;
    let mut parts: Vec<&'static SvmPartition> = Vec::new();
    let mut failed_setup: Vec<(&PartitionConfig, StopReason)> = Vec::new();
    for config in test_partitions(plan) {
        if config.asid() >= features.asids {
            hv_println!(
                "partition {}: no ASID left ({} available)",
                config.name,
                features.asids
            );
            failed_setup.push((config, StopReason::SetupFailed));
            continue;
        }
        match setup(host, config, features, nx) {
            Ok(p) => parts.push(Box::leak(Box::new(p))),
            Err(why) => {
                hv_println!("partition {}: not started: {why}", config.name);
                failed_setup.push((config, StopReason::SetupFailed));
            }
        }
    }
    // The primary's NPT must leave out everything allocated so far and
    // what it allocates itself, so it is set up after the test partitions.
    let primary = set_up_primary(plan, |c| setup_primary(host, c, plan, features, nx));
    for p in &parts {
        let apic = p.config.apic_ids()[0];
        p.outcome.start();
        let arg = *p as *const SvmPartition as *mut c_void;
        if let Err(e) = host.start_on_cpu(apic, ap_entry, arg) {
            hv_println!("partition {}: cannot start CPU {apic}: {e}", p.config.name);
            // SAFETY: the AP never started, so the BSP is the only user.
            unsafe { p.outcome.finish(StopReason::SetupFailed) };
        }
    }
    let failed: Vec<(PartitionConfig, StopReason)> = failed_setup
        .iter()
        .map(|(c, s)| ((*c).clone(), *s))
        .collect();
    let finish: &'static Finish = Box::leak(Box::new(Finish { parts, failed }));
    if let Some(p) = primary {
        // SAFETY: written once before the boot CPU turns into a guest.
        unsafe { *p.finish.get() = Some(finish) };
        // Free nothing on the heap from guest mode (the heap may be left out
        // of the primary's NPT): these two are small and live for good.
        core::mem::forget(failed_setup);
        core::mem::forget(core::mem::take(&mut host.ranges));
        if bluepill(p) {
            return wait_as_guest(host);
        }
    }
    let mut waited = 0;
    while !finish.all_done() && waited < WAIT_LIMIT_MS {
        host.stall_us(1000);
        waited += 1;
    }
    finish.summarize()
}
/// The test partitions, for the summary.
struct Finish {
    parts: Vec<&'static SvmPartition>,
    failed: Vec<(PartitionConfig, StopReason)>,
}

impl Finish {
    fn all_done(&self) -> bool {
        self.parts.iter().all(|p| p.outcome.is_done())
    }

    /// Print the summary and judge (partitions not DONE count as timed out).
    fn summarize(&self) -> Verdict {
        outcome::summarize(
            self.parts.iter().map(|p| (&p.config, &p.outcome)),
            self.failed.iter().map(|(config, stop)| (config, *stop)),
        )
    }
}
