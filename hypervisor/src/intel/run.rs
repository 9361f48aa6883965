//! Running one partition's vCPU to its end through the shared exit handler.
//!
//! Backend-neutral in shape (any [`Vcpu`]); it lives here until the generic
//! launch flow takes it over. A VM-entry failure is turned into a readable
//! message by the VMX backend before the generic stop is reported.

use crate::exit::handler::{handle_exit, ExitContext, ExitHost, Flow};
use crate::exit::ExitReason;
use crate::mem::second_level::SecondLevel;
use crate::mem::PhysMem;
use crate::partition::{PartitionConfig, StopReason};
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use nexus_abi::cpuid::Transport;

/// Exits after which a partition that never stops counts as runaway (a test
/// guest makes a few hundred). Keeps a broken guest from hanging the run.
pub const MAX_EXITS: u64 = 1_000_000;

/// Run `vcpu` until the shared handler stops it; counters go to `stats`.
/// `on_unusual` sees failed entries and exits the shared handler does not
/// know (it stops the partition on them), so the backend can log them by name.
/// `on_wait_for_sipi` runs after INIT reset the vCPU: it returns `None` once
/// the vCPU may run again (started by a SIPI, or waiting in hardware for one),
/// or why it stops.
#[allow(clippy::too_many_arguments)]
pub fn run_to_stop<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    partition: &PartitionConfig,
    second_level: &dyn SecondLevel<M>,
    mem: &mut M,
    host: &mut H,
    stats: &mut Stats,
    transport: Transport,
    mut on_unusual: impl FnMut(&ExitReason),
    mut on_wait_for_sipi: impl FnMut(&mut V) -> Option<StopReason>,
) -> StopReason {
    for _ in 0..MAX_EXITS {
        let exit = vcpu.run();
        if matches!(
            exit.reason,
            ExitReason::EntryFailed { .. } | ExitReason::Unknown { .. }
        ) {
            on_unusual(&exit.reason);
        }
        let mut cx = ExitContext {
            partition,
            second_level,
            mem,
            host,
            stats,
            transport,
        };
        match handle_exit(vcpu, exit, &mut cx) {
            Flow::Continue => {}
            Flow::Stop(reason) => return reason,
            Flow::WaitForSipi => {
                if let Some(reason) = on_wait_for_sipi(vcpu) {
                    return reason;
                }
            }
        }
    }
    StopReason::ExitNotHandled { code: u64::MAX }
}
