//! `partition_info`: the calling partition's description, written into a
//! guest buffer in the ABI's encoding (`nexus_abi::ring::PartitionInfo`).

use crate::mem::guest::GuestMemory;
use crate::mem::PhysMem;
use crate::partition::PartitionConfig;
use nexus_abi::ring::PartitionInfo;
use nexus_abi::Reply;

/// Largest encoding: fixed fields plus a 32-byte name and 256-byte cmdline
/// (the sizes `PartitionConfig` keeps), with room to spare.
const BUF: usize = 512;

pub fn write<M: PhysMem>(
    partition: &PartitionConfig,
    guest: &mut GuestMemory<'_, M>,
    gpa: u64,
    len: u32,
) -> Reply {
    let first = partition.regions().first().copied().unwrap_or_default();
    let info = PartitionInfo {
        id: partition.id as u32,
        vcpus: partition.cpu_count as u32,
        groups: partition.groups,
        memory_base: first.start,
        memory_size: first.size(),
        ring_gpa: 0,
        ring_size: 0,
        name: partition.name.as_str(),
        cmdline: partition.cmdline.as_str(),
    };
    super::write_payload::<BUF, _, _>(&info, guest, gpa, len)
}
