//! The management calls (ABI 1.5, `docs/abi.md` section 9): a partition holding the
//! `management` group describes other partitions, and loads, starts, stops and watches the
//! managed ones (policy roles `ai` and `containers`, which the hypervisor sets aside at boot
//! and does not start itself).
//!
//! The caller's memory is read through its own table (`BadAddress` outside it); the target's
//! memory is written only inside its policy regions (identity-mapped, so its guest-physical
//! addresses are host-physical) and only while it is stopped and claimed by this call. A
//! partition that is not managed (the primary, a test partition, the caller itself) answers
//! `PermissionDenied` for everything but `partition_describe`.

use super::info;
use crate::mem::guest::GuestMemory;
use crate::mem::second_level::within_phys_width;
use crate::mem::PhysMem;
use crate::partition::lifecycle::Lifecycle;
use crate::partition::PartitionConfig;
use nexus_abi::manage::{StartState, START_STATE_SIZE};
use nexus_abi::{Reply, Request, Status};

/// The machine's partitions as the management calls see them.
pub trait Partitions {
    /// Partition `id` (its index in the policy), if the policy has it.
    fn config(&self, id: u32) -> Option<&PartitionConfig>;
    /// Its life cycle, when it is a managed partition.
    fn lifecycle(&self, id: u32) -> Option<&Lifecycle>;
    /// How many of its CPUs this machine can run (0: none is online or usable).
    fn vcpus(&self, id: u32) -> u32;
    /// Write `bytes` at host-physical `pa`, inside a claimed managed partition's memory.
    fn write_phys(&self, pa: u64, bytes: &[u8]);
    /// Its run has begun (`Running`): clear what its CPUs' mailboxes hold from earlier runs
    /// and post the run to them (called under the life cycle's lock).
    fn post_run(&self, id: u32);
    /// It is `Stopping`: tell its CPUs to leave it (under the life cycle's lock).
    fn post_stop(&self, id: u32);
}

/// Bytes moved per step of a load.
const CHUNK: usize = 4096;

/// Answer a management `request` (already decoded and permitted) of a caller whose memory
/// is `guest`.
pub fn handle<M: PhysMem>(
    request: Request,
    partitions: &dyn Partitions,
    guest: &mut GuestMemory<'_, M>,
    phys_bits: u32,
) -> Reply {
    if let Request::PartitionDescribe { id, gpa, len } = request {
        let Some(target) = partitions.config(id) else {
            return Reply::err(Status::NotFound);
        };
        if !within_phys_width(gpa, len as u64, phys_bits) {
            return Reply::err(Status::BadAddress);
        }
        // `BufferTooSmall` carries the size needed: the reply comes whole from there.
        return info::write(target, guest, gpa, len);
    }
    Reply::from(act(request, partitions, guest, phys_bits))
}

/// The calls on managed partitions: RDX on success, else the status.
fn act<M: PhysMem>(
    request: Request,
    partitions: &dyn Partitions,
    guest: &mut GuestMemory<'_, M>,
    phys_bits: u32,
) -> Result<u64, Status> {
    let mut caller_range = |gpa: u64, len: u64| {
        within_phys_width(gpa, len, phys_bits) && guest.check(gpa, len as usize, false).is_ok()
    };
    match request {
        Request::PartitionLoad { id, dst, src, len } => {
            let (target, life) = managed(partitions, id)?;
            if !target.owns(dst, len as u64) || !caller_range(src, len as u64) {
                return Err(Status::BadAddress);
            }
            // The claim keeps the partition stopped (and its CPUs out of it) for the copy;
            // dropping it on any return gives it back.
            let _claim = life.claim()?;
            let mut buf = [0u8; CHUNK];
            let mut done = 0usize;
            while done < len as usize {
                let n = (len as usize - done).min(CHUNK);
                guest
                    .read(src + done as u64, &mut buf[..n])
                    .map_err(|_| Status::BadAddress)?;
                partitions.write_phys(dst + done as u64, &buf[..n]);
                done += n;
            }
            Ok(len as u64)
        }
        Request::PartitionStart { id, gpa, len } => {
            let (target, life) = managed(partitions, id)?;
            let mut bytes = [0u8; START_STATE_SIZE];
            if !caller_range(gpa, len as u64) || guest.read(gpa, &mut bytes).is_err() {
                return Err(Status::BadAddress);
            }
            // Read once: what is checked is what runs.
            let start = StartState::decode(&bytes)?;
            if !target.owns(start.cr3, crate::mem::PAGE_SIZE)
                || !target.owns(start.gdt_base, start.gdt_limit as u64 + 1)
            {
                return Err(Status::BadAddress);
            }
            let vcpus = partitions.vcpus(id);
            if vcpus == 0 {
                return Err(Status::Unsupported);
            }
            life.claim()?.run(start, vcpus, || partitions.post_run(id));
            Ok(0)
        }
        Request::PartitionStop { id } => {
            let (_, life) = managed(partitions, id)?;
            life.request_stop(|| partitions.post_stop(id));
            Ok(life.word().packed())
        }
        Request::PartitionState { id } => Ok(managed(partitions, id)?.1.word().packed()),
        _ => Err(Status::InvalidCall),
    }
}

/// Partition `id` and its life cycle when it is managed: `NotFound` without such a
/// partition, `PermissionDenied` for one that is not managed.
fn managed(partitions: &dyn Partitions, id: u32) -> Result<(&PartitionConfig, &Lifecycle), Status> {
    let config = partitions.config(id).ok_or(Status::NotFound)?;
    let life = partitions.lifecycle(id).ok_or(Status::PermissionDenied)?;
    Ok((config, life))
}

#[cfg(test)]
mod tests;
