//! Starting the partitions a policy describes, waiting for the test
//! partitions, and judging the run.
//!
//! `main.rs` calls [`launch`] after discovery, policy and image loading. It
//! needs a few services from the platform, behind [`LaunchHost`]; the
//! platform layer's `Platform` implements it (page pool, reserved regions,
//! images, MP services).

pub mod ap_mailbox;
#[cfg(target_os = "uefi")]
pub mod guest_load;
pub mod outcome;
pub mod summary;
pub mod tracked;

use crate::partition::plan::Plan;
use crate::partition::{FixedStr, Kind, PartitionConfig};
use core::ffi::c_void;
use core::fmt;

/// A function an AP runs (UEFI MP services procedure signature).
pub type ApEntry = extern "efiapi" fn(*mut c_void);

/// Why a platform service failed, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub &'static str);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// What the launch needs from the platform (BSP only, before the BSP
/// returns to firmware).
pub trait LaunchHost {
    /// Zeroed, 4 KiB-aligned, identity-mapped pages that a later OS never
    /// reclaims (hypervisor data: VMCBs, page tables, bitmaps).
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError>;
    /// Claim exactly `[base, base+size)` for a partition.
    fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), HostError>;
    /// The guest image (ELF bytes) a partition's `image` field names.
    fn image(&self, name: &str) -> Option<&'static [u8]>;
    /// Start `entry(arg)` on the CPU with this APIC ID and return at once.
    fn start_on_cpu(
        &mut self,
        apic_id: u32,
        entry: ApEntry,
        arg: *mut c_void,
    ) -> Result<(), HostError>;
    /// Busy-wait about `us` microseconds.
    fn stall_us(&mut self, us: u64);
    /// Report each range of the hypervisor's own memory that was not
    /// handed out through [`LaunchHost::alloc_pages`] (page pool, host
    /// stacks and tables), as `(base, bytes)`, so that the primary
    /// partition's nested page table leaves it out. Only memory the boot CPU
    /// never touches once it runs as the primary's guest: the heap must stay
    /// mapped as long as code after [`launch`] frees heap objects (main.rs
    /// drops its image list and memory map there).
    fn hypervisor_ranges(&self, _out: &mut dyn FnMut(u64, u64)) {}
}

/// The judgement of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub why: FixedStr<160>,
}

impl Verdict {
    pub fn fail(why: fmt::Arguments<'_>) -> Verdict {
        let mut w = summary::StrBuf::<160>::new();
        let _ = fmt::write(&mut w, why);
        Verdict {
            pass: false,
            why: FixedStr::new(w.as_str()),
        }
    }
}

/// The partitions a backend sets up and starts first, in policy order: the
/// test partitions. The primary is set up last (its nested page table leaves
/// out everything allocated before); deferred ones are only named.
pub fn test_partitions(plan: &Plan) -> impl Iterator<Item = &PartitionConfig> {
    plan.iter().filter(|config| match config.kind {
        Kind::Test => true,
        Kind::Primary => false,
        Kind::Deferred => {
            crate::hv_println!(
                "partition {}: started later through management calls (not by this version)",
                config.name
            );
            false
        }
    })
}

/// Set up the plan's primary partition with `setup` (after the test
/// partitions: its nested page table leaves out everything allocated
/// before); when that fails, say why the boot CPU stays unvirtualized.
pub fn set_up_primary<T>(
    plan: &Plan,
    setup: impl FnOnce(&PartitionConfig) -> Result<T, &'static str>,
) -> Option<T> {
    let config = plan.iter().find(|c| c.kind == Kind::Primary)?;
    setup(config)
        .map_err(|why| {
            crate::hv_println!(
                "partition {}: the boot CPU stays unvirtualized: {why}",
                config.name
            )
        })
        .ok()
}

/// Run the policy's partitions on this machine and judge the run.
#[cfg(target_os = "uefi")]
pub fn launch(
    host: &mut impl LaunchHost,
    policy: &nexus_policy::compiled::CompiledPolicy<'_>,
) -> Verdict {
    use crate::partition::plan;
    let plan = match plan::from_policy(policy) {
        Ok(p) => p,
        Err(e) => return Verdict::fail(format_args!("policy cannot be run: {e:?}")),
    };
    // CPUID 0x8000_0001 ECX bit 2: SVM.
    let svm = core::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    if svm {
        crate::amd::launch::run(host, &plan)
    } else {
        crate::intel::launch::run(host, &plan)
    }
}
