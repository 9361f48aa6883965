//! What `partition_info` writes into the guest's buffer.

use crate::numbers::GroupSet;
use crate::ring::codec::{Payload, Reader, Writer};
use crate::ring::{MAX_NAME, MAX_TEXT, PAGE_SIZE};
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
