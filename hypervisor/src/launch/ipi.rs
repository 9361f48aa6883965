//! Where an IPI a partition writes into its (trapped) interrupt command register goes.
//!
//! No partition reaches a physical ICR: the primary's xAPIC page is mapped read-only (a write
//! exits) and the x2APIC ICR MSR is intercepted for everyone. [`route`] turns one ICR write
//! into an action per target CPU, and never lets an IPI reach a CPU of another partition:
//!
//! - a **test partition** may only send INIT and start-up IPIs to its own other CPUs, by
//!   physical APIC ID; anything else is refused (the write takes #GP), as before;
//! - the **primary** owns the interrupts of its own CPUs: INIT and start-up IPIs to them are
//!   emulated (the hypervisor resets and starts that vCPU), fixed and NMI IPIs are re-sent
//!   physically to each of them, one by one (a broadcast or logical destination never goes
//!   out as such, since physically it would reach the other partitions' CPUs too). To a CPU
//!   it does not own, a *broadcast* INIT and start-up IPI (a shorthand to all CPUs, or the
//!   physical broadcast ID) become a firmware proxy run: the firmware's boot services wake
//!   every CPU they know that way at ExitBootServices and wait for each (see
//!   `cpu::run_proxy`; the INIT reaches nothing and only arms the proxy, which runs once per
//!   INIT). Everything else to such a CPU is dropped and counted, INIT and start-up IPIs
//!   addressed to it included (OVMF's StartupThisAP, or a hostile primary: nothing runs
//!   there, the review's C2). SMIs and reserved delivery modes are dropped.

use nexus_drivers::apic::{DeliveryMode, Icr, Shorthand};

/// Who writes the ICR.
pub struct Sender<'a> {
    /// The primary partition (else a test partition, which gets the strict rules).
    pub primary: bool,
    pub apic_id: u32,
    /// The CPUs of the sender's partition.
    pub own: &'a [u32],
    /// Every CPU the machine has (all partitions and idle ones).
    pub all: &'a [u32],
    /// The write came through the x2APIC MSR (32-bit IDs, logical IDs derived from them).
    pub x2apic: bool,
    /// xAPIC logical addressing: the logical ID byte (LDR bits 31:24) each of the sender's
    /// CPUs programmed, `None` before it did. Other partitions' CPUs keep the reset value 0,
    /// which no logical destination matches.
    pub logical_id: &'a dyn Fn(u32) -> Option<u8>,
    /// xAPIC destination format: flat (else cluster).
    pub flat: bool,
}

/// What happens at one target CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Emulated INIT: the target vCPU resets and waits for a start-up IPI.
    Init,
    /// Emulated start-up IPI.
    StartUp(u8),
    /// Sent physically to this one CPU (a fixed IPI or an NMI the primary may send itself).
    Forward(Icr),
    /// A broadcast INIT from the primary to a CPU it does not own: nothing reaches the CPU,
    /// but the next broadcast start-up IPI may run the firmware there (`Mailbox::arm_proxy`).
    ProxyInit,
    /// A broadcast start-up IPI from the primary to a CPU it does not own: run the firmware
    /// there until it halts, if a broadcast INIT came first.
    Proxy(u8),
    /// Not delivered (counted by the caller).
    Drop,
}

/// A test partition's ICR write that is not allowed: it takes #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

const XAPIC_BROADCAST: u32 = 0xff;
const X2APIC_BROADCAST: u32 = 0xffff_ffff;

/// Route `icr` written by `sender`: `out(apic_id, action)` once per target CPU.
pub fn route(
    icr: &Icr,
    sender: &Sender<'_>,
    out: &mut dyn FnMut(u32, Action),
) -> Result<(), Refused> {
    // "INIT level de-assert" (old MP start-up protocols) has no effect on current processors.
    if icr.mode == DeliveryMode::Init && !icr.assert {
        return Ok(());
    }
    if !sender.primary {
        return route_test(icr, sender, out);
    }
    for &target in sender.all {
        if !reaches(icr, sender, target) {
            continue;
        }
        let own = sender.own.contains(&target);
        let to_self = target == sender.apic_id;
        let action = match icr.mode {
            DeliveryMode::Init if own && !to_self => Action::Init,
            DeliveryMode::StartUp if own && !to_self => Action::StartUp(icr.vector),
            DeliveryMode::Init if !own && is_broadcast(icr, sender) => Action::ProxyInit,
            DeliveryMode::StartUp if !own && is_broadcast(icr, sender) => Action::Proxy(icr.vector),
            DeliveryMode::Fixed | DeliveryMode::LowestPriority | DeliveryMode::Nmi if own => {
                let mode = match icr.mode {
                    DeliveryMode::LowestPriority => DeliveryMode::Fixed,
                    m => m,
                };
                Action::Forward(Icr {
                    level_triggered: icr.level_triggered && mode == DeliveryMode::Fixed,
                    ..Icr::to_cpu(mode, icr.vector, target)
                })
            }
            _ => Action::Drop,
        };
        out(target, action);
    }
    // A physical destination that names no CPU of the machine reaches nobody, as on hardware.
    Ok(())
}

/// A shorthand to all CPUs, or the physical broadcast ID of the ICR's format.
fn is_broadcast(icr: &Icr, sender: &Sender<'_>) -> bool {
    match icr.shorthand {
        Shorthand::AllIncludingSelf | Shorthand::AllExcludingSelf => true,
        Shorthand::SelfOnly => false,
        Shorthand::None => !icr.logical && icr.destination == broadcast_id(sender),
    }
}

fn broadcast_id(sender: &Sender<'_>) -> u32 {
    if sender.x2apic {
        X2APIC_BROADCAST
    } else {
        XAPIC_BROADCAST
    }
}

/// The test-partition rule: INIT or start-up to one of its own other CPUs, by physical ID.
fn route_test(
    icr: &Icr,
    sender: &Sender<'_>,
    out: &mut dyn FnMut(u32, Action),
) -> Result<(), Refused> {
    let target = icr.single_target().ok_or(Refused)?;
    if target == sender.apic_id || !sender.own.contains(&target) {
        return Err(Refused);
    }
    let action = match icr.mode {
        DeliveryMode::Init => Action::Init,
        DeliveryMode::StartUp => Action::StartUp(icr.vector),
        _ => return Err(Refused),
    };
    out(target, action);
    Ok(())
}

/// Whether the ICR's destination (shorthand, physical or logical) includes `target`.
fn reaches(icr: &Icr, sender: &Sender<'_>, target: u32) -> bool {
    match icr.shorthand {
        Shorthand::SelfOnly => target == sender.apic_id,
        Shorthand::AllIncludingSelf => true,
        Shorthand::AllExcludingSelf => target != sender.apic_id,
        Shorthand::None if !icr.logical => {
            icr.destination == broadcast_id(sender) || icr.destination == target
        }
        Shorthand::None => logical_match(icr.destination, sender, target),
    }
}

/// Logical destination: x2APIC clusters derived from the ID (SDM 11.12.10.2), xAPIC flat
/// (8-bit mask) or cluster (4-bit cluster, 4-bit mask) against the target's logical ID.
fn logical_match(dest: u32, sender: &Sender<'_>, target: u32) -> bool {
    if sender.x2apic {
        let cluster = target >> 4;
        let bit = 1u32 << (target & 0xf);
        return dest >> 16 == cluster && dest & 0xffff & bit != 0;
    }
    let Some(id) = (sender.logical_id)(target) else {
        return false;
    };
    let dest = dest as u8;
    if sender.flat {
        dest & id != 0
    } else {
        dest >> 4 == id >> 4 && dest & id & 0xf != 0
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn primary<'a>(apic_id: u32, own: &'a [u32], all: &'a [u32]) -> Sender<'a> {
        Sender {
            primary: true,
            apic_id,
            own,
            all,
            x2apic: false,
            logical_id: &|apic| Some(1 << apic),
            flat: true,
        }
    }

    fn routed(icr: Icr, s: &Sender<'_>) -> Result<Vec<(u32, Action)>, Refused> {
        let mut v = Vec::new();
        route(&icr, s, &mut |a, act| v.push((a, act)))?;
        Ok(v)
    }

    const ALL: [u32; 5] = [0, 1, 2, 3, 4];
    const PRIMARY: [u32; 2] = [0, 1];

    #[test]
    fn primary_init_and_startup_to_its_own_ap_are_emulated() {
        let s = primary(0, &PRIMARY, &ALL);
        assert_eq!(routed(Icr::init(1), &s).unwrap(), [(1, Action::Init)]);
        assert_eq!(
            routed(Icr::startup(1, 0x9a), &s).unwrap(),
            [(1, Action::StartUp(0x9a))]
        );
        // INIT level de-assert: nothing at all
        let deassert = Icr {
            assert: false,
            ..Icr::init(1)
        };
        assert_eq!(routed(deassert, &s).unwrap(), []);
        // INIT to itself is ignored
        assert_eq!(routed(Icr::init(0), &s).unwrap(), [(0, Action::Drop)]);
    }

    #[test]
    fn primary_ipis_to_other_partitions_never_leave() {
        let s = primary(0, &PRIMARY, &ALL);
        assert_eq!(routed(Icr::init(2), &s).unwrap(), [(2, Action::Drop)]);
        assert_eq!(routed(Icr::nmi(3), &s).unwrap(), [(3, Action::Drop)]);
        let fixed = Icr::to_cpu(DeliveryMode::Fixed, 0x40, 4);
        assert_eq!(routed(fixed, &s).unwrap(), [(4, Action::Drop)]);
        let smi = Icr::to_cpu(DeliveryMode::Smi, 0, 1);
        assert_eq!(routed(smi, &s).unwrap(), [(1, Action::Drop)]);
        // a start-up IPI addressed to a CPU it does not own runs nothing there (physical or
        // logical, xAPIC or x2APIC): only a broadcast starts a firmware proxy
        assert_eq!(
            routed(Icr::startup(2, 0x87), &s).unwrap(),
            [(2, Action::Drop)]
        );
        let x2 = Sender {
            x2apic: true,
            ..primary(0, &PRIMARY, &ALL)
        };
        assert_eq!(
            routed(Icr::startup(3, 0x87), &x2).unwrap(),
            [(3, Action::Drop)]
        );
        let logical_all = Icr {
            logical: true,
            ..Icr::startup(0xff, 0x87)
        };
        let r = routed(logical_all, &s).unwrap();
        assert!(r.iter().all(|(t, a)| *t < 2 || *a == Action::Drop), "{r:?}");
        // no such CPU: nobody
        assert_eq!(routed(Icr::init(9), &s).unwrap(), []);
    }

    #[test]
    fn broadcasts_are_split_and_limited_to_the_primary() {
        let s = primary(0, &PRIMARY, &ALL);
        let all_but_self = Icr {
            shorthand: Shorthand::AllExcludingSelf,
            ..Icr::to_cpu(DeliveryMode::Fixed, 0xfd, 0)
        };
        assert_eq!(
            routed(all_but_self, &s).unwrap(),
            [
                (
                    1,
                    Action::Forward(Icr::to_cpu(DeliveryMode::Fixed, 0xfd, 1))
                ),
                (2, Action::Drop),
                (3, Action::Drop),
                (4, Action::Drop)
            ]
        );
        // the firmware's INIT-SIPI-SIPI to every AP at ExitBootServices
        let init_all = Icr {
            shorthand: Shorthand::AllExcludingSelf,
            ..Icr::init(0)
        };
        assert_eq!(
            routed(init_all, &s).unwrap(),
            [
                (1, Action::Init),
                (2, Action::ProxyInit),
                (3, Action::ProxyInit),
                (4, Action::ProxyInit)
            ]
        );
        let sipi_all = Icr {
            shorthand: Shorthand::AllExcludingSelf,
            ..Icr::startup(0, 0x87)
        };
        assert_eq!(
            routed(sipi_all, &s).unwrap(),
            [
                (1, Action::StartUp(0x87)),
                (2, Action::Proxy(0x87)),
                (3, Action::Proxy(0x87)),
                (4, Action::Proxy(0x87))
            ]
        );
        // the physical broadcast ID is a broadcast too (xAPIC 0xff, x2APIC 0xffffffff)
        assert_eq!(
            routed(Icr::init(0xff), &s).unwrap()[3],
            (3, Action::ProxyInit)
        );
        let sipi_ff = Icr::startup(0xff, 0x87);
        assert_eq!(
            routed(sipi_ff, &s).unwrap(),
            [
                (0, Action::Drop),
                (1, Action::StartUp(0x87)),
                (2, Action::Proxy(0x87)),
                (3, Action::Proxy(0x87)),
                (4, Action::Proxy(0x87))
            ]
        );
        let x2 = Sender {
            x2apic: true,
            ..primary(0, &PRIMARY, &ALL)
        };
        let sipi_all_x2 = Icr::startup(u32::MAX, 0x87);
        assert_eq!(routed(sipi_all_x2, &x2).unwrap().len(), 5);
        assert_eq!(
            routed(sipi_all_x2, &x2).unwrap()[4],
            (4, Action::Proxy(0x87))
        );
        let broadcast = Icr::to_cpu(DeliveryMode::Nmi, 0, 0xff);
        let r = routed(broadcast, &s).unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[0], (0, Action::Forward(Icr::nmi(0))));
        assert_eq!(r[1], (1, Action::Forward(Icr::nmi(1))));
        assert!(r[2..].iter().all(|(_, a)| *a == Action::Drop));
        let self_ipi = Icr {
            shorthand: Shorthand::SelfOnly,
            ..Icr::to_cpu(DeliveryMode::Fixed, 0x30, 7)
        };
        assert_eq!(
            routed(self_ipi, &s).unwrap(),
            [(
                0,
                Action::Forward(Icr::to_cpu(DeliveryMode::Fixed, 0x30, 0))
            )]
        );
    }

    #[test]
    fn logical_destinations_follow_the_programmed_ids() {
        // flat: logical IDs 1 << apic for the primary, 0 (no match) for the rest
        let s = Sender {
            logical_id: &|apic| PRIMARY.contains(&apic).then(|| 1 << apic),
            ..primary(0, &PRIMARY, &ALL)
        };
        let to_both = Icr {
            logical: true,
            ..Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 0b11)
        };
        let r = routed(to_both, &s).unwrap();
        assert_eq!(
            r,
            [
                (
                    0,
                    Action::Forward(Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 0))
                ),
                (
                    1,
                    Action::Forward(Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 1))
                )
            ]
        );
        // x2APIC: cluster 0, bits for IDs 1 and 3; ID 3 belongs to a test partition
        let x2 = Sender {
            x2apic: true,
            ..primary(0, &PRIMARY, &ALL)
        };
        let to_1_and_3 = Icr {
            logical: true,
            ..Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 0b1010)
        };
        assert_eq!(
            routed(to_1_and_3, &x2).unwrap(),
            [
                (
                    1,
                    Action::Forward(Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 1))
                ),
                (3, Action::Drop)
            ]
        );
        // xAPIC cluster model: cluster 1, member bit 0
        let cluster = Sender {
            flat: false,
            logical_id: &|apic| (apic == 1).then_some(0x11),
            ..primary(0, &PRIMARY, &ALL)
        };
        let c = Icr {
            logical: true,
            ..Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 0x11)
        };
        assert_eq!(
            routed(c, &cluster).unwrap(),
            [(
                1,
                Action::Forward(Icr::to_cpu(DeliveryMode::Fixed, 0xf1, 1))
            )]
        );
    }

    #[test]
    fn test_partitions_only_signal_their_own_aps() {
        let own = [1, 2];
        let s = Sender {
            primary: false,
            ..primary(1, &own, &ALL)
        };
        assert_eq!(routed(Icr::init(2), &s).unwrap(), [(2, Action::Init)]);
        assert_eq!(
            routed(Icr::startup(2, 0x20), &s).unwrap(),
            [(2, Action::StartUp(0x20))]
        );
        assert_eq!(routed(Icr::init(1), &s), Err(Refused), "itself");
        assert_eq!(routed(Icr::init(3), &s), Err(Refused), "another partition");
        assert_eq!(routed(Icr::nmi(2), &s), Err(Refused));
        let broadcast = Icr {
            shorthand: Shorthand::AllExcludingSelf,
            ..Icr::init(0)
        };
        assert_eq!(routed(broadcast, &s), Err(Refused));
        let logical = Icr {
            logical: true,
            ..Icr::init(2)
        };
        assert_eq!(routed(logical, &s), Err(Refused));
        let deassert = Icr {
            assert: false,
            ..Icr::init(2)
        };
        assert_eq!(routed(deassert, &s).unwrap(), []);
    }
}
