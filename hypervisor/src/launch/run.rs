//! The run loop of one vCPU, written once for every backend and every role: the primary's
//! CPUs (which run forever), a test partition's CPUs (until their guest stops or their
//! deadline passes), and a firmware proxy (until its firmware code halts).
//!
//! Before each entry the loop takes what other CPUs posted ([`super::mailbox`]) and the NMIs
//! that reached this CPU ([`crate::platform::nmi`]): an emulated INIT resets the vCPU, a
//! start-up IPI starts it, a stop ends it; an NMI that carried no request was meant for the
//! guest and is re-injected into the primary (dropped for the others, which own no NMI
//! source). A vCPU that waits for a start-up IPI waits in host mode. There is no exit budget:
//! a test partition is bounded by its deadline instead, the primary by nothing.

use super::mailbox::{self, Apply, Requests};
use crate::exit::{handle_exit, ExitContext, ExitHost, ExitReason, Flow};
use crate::mem::PhysMem;
use crate::partition::StopReason;
use crate::vcpu::Vcpu;

/// What a vCPU is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// One of the primary partition's CPUs: runs until the machine stops.
    Primary,
    /// A test partition's CPU: until its guest stops, or its deadline.
    Test,
    /// The primary's firmware on a CPU the primary does not own: until it halts.
    Proxy,
    /// A managed partition's CPU (`partition_start`): until its guest stops, it faults, or a
    /// manager stops it; untrusted like a test partition, with no deadline.
    Managed,
}

impl Role {
    /// The intercepts of a vCPU in this role: the primary's CPUs keep HLT, interrupts and
    /// their performance paths native; a test partition's guest is untrusted; so is a
    /// firmware proxy (the primary's code on a CPU it does not own), which ends at its HLT or
    /// MWAIT, the idle loops the firmware's APs enter once their work is done, and has a
    /// deadline.
    pub fn intercepts(self) -> super::backend::VcpuIntercepts {
        super::backend::VcpuIntercepts {
            hlt: self != Role::Primary,
            interrupts: self != Role::Primary,
            untrusted: self != Role::Primary,
        }
    }
}

/// The CPU's side of the loop: its mailbox, its NMIs, its clock.
pub trait CpuEvents {
    /// NMIs that reached this CPU since the last call.
    fn take_nmis(&mut self) -> u32;
    /// Requests posted to this vCPU since the last call.
    fn take_requests(&mut self) -> Requests;
    /// Wait in host mode until a request is posted.
    fn wait_for_request(&mut self);
    /// `Some(seconds)` once the vCPU has run past its deadline of that many seconds.
    fn past_deadline(&mut self) -> Option<u32>;
    /// After an external-interrupt exit: let the host acknowledge it.
    fn take_interrupt(&mut self);
    /// The vCPU was reset by INIT (for the log).
    fn on_reset(&mut self);
    /// The vCPU was started by a start-up IPI at `vector` (for the log).
    fn on_start(&mut self, vector: u8);
    /// The vCPU exited at `rip` (called once the exit is handled and counted).
    fn on_exit(&mut self, _exit: &crate::exit::VmExit, _rip: u64) {}
}

/// Run `vcpu` until it stops; `waiting` when it starts reset (an AP).
pub fn run<V, M, H, E>(
    vcpu: &mut V,
    cx: &mut ExitContext<'_, M, H>,
    events: &mut E,
    role: Role,
    mut waiting: bool,
) -> StopReason
where
    V: Vcpu,
    M: PhysMem,
    H: ExitHost + ?Sized,
    E: CpuEvents,
{
    loop {
        let nmis = events.take_nmis();
        let requests = events.take_requests();
        match mailbox::apply(&requests, waiting) {
            Apply::Stop => return StopReason::PartitionEnded,
            Apply::Reset => {
                if vcpu.init_reset().is_err() {
                    return StopReason::InitNotEmulated;
                }
                waiting = true;
                events.on_reset();
            }
            Apply::Start { reset, vector } => {
                if reset && vcpu.init_reset().is_err() {
                    return StopReason::InitNotEmulated;
                }
                vcpu.sipi_start(vector);
                waiting = false;
                events.on_start(vector);
            }
            Apply::Nothing => {}
        }
        // An NMI that came with a request was the sender's kick; one without was the guest's.
        if nmis > 0 && !requests.any() && !waiting && role == Role::Primary {
            vcpu.queue_nmi();
        }
        if waiting {
            events.wait_for_request();
            continue;
        }
        if let Some(seconds) = events.past_deadline() {
            return StopReason::Runaway { seconds };
        }
        let exit = vcpu.run();
        let rip = vcpu.rip();
        match exit.reason {
            ExitReason::Interrupt => events.take_interrupt(),
            // A firmware proxy's work is done once the firmware's AP code idles.
            ExitReason::Hlt | ExitReason::Mwait if role == Role::Proxy => {
                cx.stats.count_exit(&exit.reason);
                return StopReason::Halted;
            }
            _ => {}
        }
        let flow = handle_exit(vcpu, exit, cx);
        events.on_exit(&exit, rip);
        match flow {
            Flow::Continue => {}
            Flow::Stop(reason) => return reason,
            // A hardware INIT (none is sent any more, but a backend may report one).
            Flow::WaitForSipi => waiting = true,
        }
    }
}

#[cfg(test)]
mod tests;
