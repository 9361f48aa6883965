//! What `partition_info` and `partition_stats` write into the guest's buffer.

use crate::numbers::GroupSet;
use crate::ring::codec::{List, Payload, Reader, Writer};
use crate::ring::{MAX_LIST, MAX_NAME, MAX_TEXT, PAGE_SIZE};
use crate::status::Status;

/// Layout version of [`PartitionInfo`]; a guest seeing another one gets
/// `VersionMismatch`.
pub const PARTITION_INFO_VERSION: u16 = 1;

/// The calling partition, as the policy describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo<'a> {
    /// Index of the partition in the policy.
    pub id: u32,
    pub vcpus: u32,
    /// Groups the partition may call.
    pub groups: GroupSet,
    /// The partition's first memory region (guest-physical).
    pub memory_base: u64,
    pub memory_size: u64,
    /// Guest-physical address of its shared-memory ring (page-aligned), 0 if none.
    pub ring_gpa: u64,
    /// Ring size in bytes, 0 if none.
    pub ring_size: u32,
    pub name: &'a str,
    /// The policy's `cmdline` for the partition; may be empty.
    pub cmdline: &'a str,
}

impl PartitionInfo<'_> {
    fn check(&self) -> Result<(), Status> {
        let has_ring = self.ring_gpa != 0 || self.ring_size != 0;
        let aligned = self.ring_gpa.is_multiple_of(PAGE_SIZE as u64)
            && self.ring_size.is_multiple_of(PAGE_SIZE);
        if has_ring && (self.ring_size == 0 || !aligned) {
            return Err(Status::InvalidArgument);
        }
        Ok(())
    }
}

impl<'a> Payload<'a> for PartitionInfo<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        w.u16(PARTITION_INFO_VERSION);
        w.u32(self.id);
        w.u32(self.vcpus);
        w.u32(self.groups.bits());
        w.u64(self.memory_base);
        w.u64(self.memory_size);
        w.u64(self.ring_gpa);
        w.u32(self.ring_size);
        w.name(self.name, MAX_NAME)?;
        w.str(self.cmdline, MAX_TEXT)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        if r.u16()? != PARTITION_INFO_VERSION {
            return Err(Status::VersionMismatch);
        }
        let info = PartitionInfo {
            id: r.u32()?,
            vcpus: r.u32()?,
            groups: GroupSet::from_bits(r.u32()?).ok_or(Status::InvalidArgument)?,
            memory_base: r.u64()?,
            memory_size: r.u64()?,
            ring_gpa: r.u64()?,
            ring_size: r.u32()?,
            name: r.name(MAX_NAME)?,
            cmdline: r.str(MAX_TEXT)?,
        };
        info.check()?;
        Ok(info)
    }
}

/// Layout version of [`PartitionStats`]; a guest seeing another one gets
/// `VersionMismatch`.
pub const PARTITION_STATS_VERSION: u16 = 1;
/// Longest counter name.
pub const MAX_COUNTER_NAME: usize = 32;

/// One named counter of [`PartitionStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter<'a> {
    /// The exit reason (`cpuid`, `npf`, ...) or the call's name (`partition_info`).
    pub name: &'a str,
    pub count: u64,
}

impl<'a> Payload<'a> for Counter<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.name(self.name, MAX_COUNTER_NAME)?;
        w.u64(self.count);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(Counter {
            name: r.name(MAX_COUNTER_NAME)?,
            count: r.u64()?,
        })
    }
}

/// What `partition_stats` writes: the calling partition's counters since it
/// started, summed over its CPUs. Counters only grow; two snapshots give rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartitionStats<'a> {
    /// CPUs whose counters are summed.
    pub vcpus: u32,
    /// Every exit the hypervisor handled.
    pub exits_total: u64,
    /// Exits by reason, only the reasons seen (count > 0).
    pub exits: List<'a, Counter<'a>>,
    /// Hypercalls by call, only the calls made (count > 0).
    pub calls: List<'a, Counter<'a>>,
    /// Hypercalls with an unassigned number.
    pub invalid_calls: u64,
}

impl<'a> Payload<'a> for PartitionStats<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u16(PARTITION_STATS_VERSION);
        w.u32(self.vcpus);
        w.u64(self.exits_total);
        self.exits.write(w, MAX_LIST)?;
        self.calls.write(w, MAX_LIST)?;
        w.u64(self.invalid_calls);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        if r.u16()? != PARTITION_STATS_VERSION {
            return Err(Status::VersionMismatch);
        }
        Ok(PartitionStats {
            vcpus: r.u32()?,
            exits_total: r.u64()?,
            exits: List::read(r, MAX_LIST)?,
            calls: List::read(r, MAX_LIST)?,
            invalid_calls: r.u64()?,
        })
    }
}
