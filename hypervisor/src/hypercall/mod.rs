//! Hypercall dispatch, backend-neutral.
//!
//! Order of checks (each failure answers a status, never stops the
//! partition): the ABI crate validates the number and arguments
//! (`InvalidCall`, `InvalidArgument`, `LimitExceeded`); then the policy's
//! group set (`PermissionDenied`); then guest buffers must lie in the
//! partition's memory (`BadAddress`; a buffer reaching beyond the CPU's
//! physical-address width is refused before any table is read, so no high
//! bit is ever dropped). AI calls (groups models, gpu, tensors,
//! containers) answer `ServiceUnavailable` while no AI partition is
//! connected to this hypervisor.

use crate::exit::ExitHost;
use crate::mem::guest::{GuestMemory, Paging};
use crate::mem::second_level::{within_phys_width, SecondLevel};
use crate::mem::PhysMem;
use crate::partition::PartitionConfig;
use nexus_abi::ring::Payload;
use nexus_abi::{HypercallArgs, Reply, Request, Status, ABI_VERSION};

pub mod info;
pub mod manage;
pub mod stats;

/// What the caller does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Put the reply in RAX/RDX, step over the instruction, resume.
    Reply(Reply),
    /// `partition_exit(code)`: stop the partition.
    Exit { code: u32 },
}

/// Bytes copied per step of `console_write`.
const CONSOLE_CHUNK: usize = 256;

/// Handle one call from `partition`.
pub fn dispatch<M: PhysMem, H: ExitHost + ?Sized>(
    call: &HypercallArgs,
    partition: &PartitionConfig,
    second_level: &dyn SecondLevel<M>,
    mem: &mut M,
    host: &mut H,
) -> CallOutcome {
    let request = match call.decode() {
        Ok(r) => r,
        Err(status) => return CallOutcome::Reply(Reply::err(status)),
    };
    if !partition.groups.permits(request.call()) {
        return CallOutcome::Reply(Reply::err(Status::PermissionDenied));
    }
    // Buffers are guest-physical (see nexus_abi::call), below MAXPHYADDR (read
    // only for the calls that take a buffer: `yield` stays cheap).
    let mut guest = GuestMemory {
        second_level,
        mem,
        paging: Paging::None,
    };
    let reply = match request {
        Request::Version { guest: v } => {
            let ours = ABI_VERSION.packed() as u64;
            match v {
                Some(v) if !ABI_VERSION.compatible_with(v) => Reply {
                    status: Status::VersionMismatch,
                    value: ours,
                },
                _ => Reply::ok(ours),
            }
        }
        Request::ConsoleWrite { gpa, len } => {
            if !within_phys_width(gpa, len as u64, phys_bits(host))
                || guest.check(gpa, len as usize, false).is_err()
            {
                return CallOutcome::Reply(Reply::err(Status::BadAddress));
            }
            let mut buf = [0u8; CONSOLE_CHUNK];
            let mut done = 0usize;
            while done < len as usize {
                let n = (len as usize - done).min(CONSOLE_CHUNK);
                if guest.read(gpa + done as u64, &mut buf[..n]).is_err() {
                    break;
                }
                host.console(&buf[..n]);
                done += n;
            }
            Reply::ok(done as u64)
        }
        Request::PartitionInfo { gpa, len } | Request::PartitionStats { gpa, len }
            if !within_phys_width(gpa, len as u64, phys_bits(host)) =>
        {
            Reply::err(Status::BadAddress)
        }
        Request::PartitionInfo { gpa, len } => info::write(partition, &mut guest, gpa, len),
        Request::PartitionStats { gpa, len } => stats::write(&*host, &mut guest, gpa, len),
        Request::Yield => Reply::ok(0),
        Request::PartitionExit { code } => return CallOutcome::Exit { code },
        Request::PartitionDescribe { .. }
        | Request::PartitionLoad { .. }
        | Request::PartitionStart { .. }
        | Request::PartitionStop { .. }
        | Request::PartitionState { .. } => {
            let bits = phys_bits(host);
            match host.partitions() {
                Some(partitions) => manage::handle(request, partitions, &mut guest, bits),
                // A host that runs no other partition (the unit-test hosts).
                None => Reply::err(Status::NotFound),
            }
        }
        // No AI partition is connected to this hypervisor yet.
        Request::Ring { .. } => Reply::err(Status::ServiceUnavailable),
    };
    CallOutcome::Reply(reply)
}

/// Encodes `payload` in an `N`-byte scratch buffer and copies it into the guest's buffer at
/// `gpa` of `len` bytes: `BufferTooSmall` with the size needed when it does not fit,
/// `BadAddress` when the buffer is not the partition's memory.
fn write_payload<'a, const N: usize, M: PhysMem, P: Payload<'a>>(
    payload: &P,
    guest: &mut GuestMemory<'_, M>,
    gpa: u64,
    len: u32,
) -> Reply {
    let mut buf = [0u8; N];
    let n = match payload.encode(&mut buf) {
        Ok(n) => n,
        Err(_) => return Reply::err(Status::Internal),
    };
    if n > len as usize {
        return Reply {
            status: Status::BufferTooSmall,
            value: n as u64,
        };
    }
    match guest.write(gpa, &buf[..n]) {
        Ok(()) => Reply::ok(n as u64),
        Err(_) => Reply::err(Status::BadAddress),
    }
}

/// The CPU's physical-address width (MAXPHYADDR): CPUID 0x8000_0008 EAX[7:0],
/// 36 where the leaf does not exist (SDM vol. 3A 4.1.4).
fn phys_bits<H: ExitHost + ?Sized>(host: &H) -> u32 {
    const DEFAULT: u32 = 36;
    if host.host_cpuid(0x8000_0000, 0).eax < 0x8000_0008 {
        return DEFAULT;
    }
    match host.host_cpuid(0x8000_0008, 0).eax & 0xff {
        0 => DEFAULT,
        bits => bits,
    }
}
