//! `partition_stats`: the calling partition's exit and hypercall counters, summed over its
//! CPUs, written into a guest buffer in the ABI's encoding (`nexus_abi::ring::PartitionStats`).

use crate::exit::ExitHost;
use crate::mem::guest::GuestMemory;
use crate::mem::PhysMem;
use crate::stats::{Stats, EXIT_NAMES};
use nexus_abi::ring::{Counter, List, PartitionStats};
use nexus_abi::{Hypercall, Reply, Status};

/// Largest encoding: every exit reason and call with a 32-byte name and its count.
const BUF: usize = 2048;

pub fn write<M: PhysMem, H: ExitHost + ?Sized>(
    host: &H,
    guest: &mut GuestMemory<'_, M>,
    gpa: u64,
    len: u32,
) -> Reply {
    let sum = Stats::new();
    let Some(vcpus) = host.partition_stats(&sum) else {
        return Reply::err(Status::ServiceUnavailable);
    };
    let none = Counter { name: "", count: 0 };
    let mut exits = [none; EXIT_NAMES.len()];
    let mut n_exits = 0;
    for (name, count) in sum.exit_counts() {
        exits[n_exits] = Counter { name, count };
        n_exits += 1;
    }
    let mut calls = [none; Hypercall::ALL.len()];
    let mut n_calls = 0;
    for (call, count) in sum.call_counts() {
        calls[n_calls] = Counter {
            name: call.name(),
            count,
        };
        n_calls += 1;
    }
    let stats = PartitionStats {
        vcpus,
        exits_total: sum.total_exits(),
        exits: List::new(&exits[..n_exits]),
        calls: List::new(&calls[..n_calls]),
        invalid_calls: sum.invalid_calls(),
    };
    super::write_payload::<BUF, _, _>(&stats, guest, gpa, len)
}
