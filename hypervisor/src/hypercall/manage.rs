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
    let caller_range = |guest: &mut GuestMemory<'_, M>, gpa: u64, len: u64, write: bool| {
        within_phys_width(gpa, len, phys_bits) && guest.check(gpa, len as usize, write).is_ok()
    };
    match request {
        Request::PartitionDescribe { id, gpa, len } => {
            let Some(target) = partitions.config(id) else {
                return Reply::err(Status::NotFound);
            };
            if !within_phys_width(gpa, len as u64, phys_bits) {
                return Reply::err(Status::BadAddress);
            }
            info::write(target, guest, gpa, len)
        }
        Request::PartitionLoad { id, dst, src, len } => {
            let target = match managed(partitions, id) {
                Ok(t) => t,
                Err(s) => return Reply::err(s),
            };
            if !target.owns(dst, len as u64) || !caller_range(guest, src, len as u64, false) {
                return Reply::err(Status::BadAddress);
            }
            let Some(life) = partitions.lifecycle(id) else {
                return Reply::err(Status::PermissionDenied);
            };
            let claim = match life.claim() {
                Ok(c) => c,
                Err(s) => return Reply::err(s),
            };
            // The claim keeps the partition stopped (and its CPUs out of it) for the copy.
            let mut buf = [0u8; CHUNK];
            let mut done = 0usize;
            while done < len as usize {
                let n = (len as usize - done).min(CHUNK);
                if guest.read(src + done as u64, &mut buf[..n]).is_err() {
                    claim.release();
                    return Reply::err(Status::BadAddress);
                }
                partitions.write_phys(dst + done as u64, &buf[..n]);
                done += n;
            }
            claim.release();
            Reply::ok(len as u64)
        }
        Request::PartitionStart { id, gpa, len } => {
            let target = match managed(partitions, id) {
                Ok(t) => t,
                Err(s) => return Reply::err(s),
            };
            if !caller_range(guest, gpa, len as u64, false) {
                return Reply::err(Status::BadAddress);
            }
            let mut bytes = [0u8; START_STATE_SIZE];
            if guest.read(gpa, &mut bytes).is_err() {
                return Reply::err(Status::BadAddress);
            }
            // Read once: what is checked is what runs.
            let start = match StartState::decode(&bytes) {
                Ok(s) => s,
                Err(e) => return Reply::err(e),
            };
            if !target.owns(start.cr3, crate::mem::PAGE_SIZE)
                || !target.owns(start.gdt_base, start.gdt_limit as u64 + 1)
            {
                return Reply::err(Status::BadAddress);
            }
            let vcpus = partitions.vcpus(id);
            if vcpus == 0 {
                return Reply::err(Status::Unsupported);
            }
            let Some(life) = partitions.lifecycle(id) else {
                return Reply::err(Status::PermissionDenied);
            };
            match life.claim() {
                Ok(claim) => claim.run(start, vcpus, || partitions.post_run(id)),
                Err(s) => return Reply::err(s),
            }
            Reply::ok(0)
        }
        Request::PartitionStop { id } => {
            if let Err(s) = managed(partitions, id) {
                return Reply::err(s);
            }
            let Some(life) = partitions.lifecycle(id) else {
                return Reply::err(Status::PermissionDenied);
            };
            life.request_stop(|| partitions.post_stop(id));
            Reply::ok(life.word().packed())
        }
        Request::PartitionState { id } => {
            if let Err(s) = managed(partitions, id) {
                return Reply::err(s);
            }
            match partitions.lifecycle(id) {
                Some(life) => Reply::ok(life.word().packed()),
                None => Reply::err(Status::PermissionDenied),
            }
        }
        _ => Reply::err(Status::InvalidCall),
    }
}

/// Partition `id` when it is managed: `NotFound` without such a partition,
/// `PermissionDenied` for one that is not managed.
fn managed(partitions: &dyn Partitions, id: u32) -> Result<PartitionConfig, Status> {
    let config = partitions.config(id).ok_or(Status::NotFound)?;
    if partitions.lifecycle(id).is_none() {
        return Err(Status::PermissionDenied);
    }
    Ok(config.clone())
}

#[cfg(test)]
mod tests;
