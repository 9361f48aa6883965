//! What `nexusctl info` prints: aligned `key  value` lines, one fact per line, so scripts can
//! grep them.

use std::fmt::Write as _;

use nexus_abi::cpuid::{Discovery, Features, Transport};
use nexus_abi::manage::{LastStop, RunState, StateWord};
use nexus_abi::ring::{PartitionInfo, PartitionStats};
use nexus_abi::{GroupSet, Status, ABI_VERSION};

/// The discovery block.
pub fn discovery(d: &Discovery) -> String {
    let i = &d.info;
    let mut out = format!("NexusOS found at CPUID {:#x}\n", d.base);
    let line = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "  {key:<10} {value}");
    };
    line(
        &mut out,
        "abi",
        &format!("{} (nexusctl speaks {ABI_VERSION})", i.version),
    );
    line(&mut out, "transport", &transport(i.transport));
    line(&mut out, "features", &features(i.features));
    line(&mut out, "groups", &groups(i.groups));
    let bell = match (i.transport, i.user_doorbell()) {
        (Transport::Mmio { .. }, Some(gpa)) => format!("{gpa:#x} (the MMIO transport)"),
        (_, Some(gpa)) => format!("{gpa:#x} (user-space doorbell, root only)"),
        (_, None) => "none".to_string(),
    };
    line(&mut out, "doorbell", &bell);
    out
}

/// The partition block, from `partition_info`.
pub fn partition(p: &PartitionInfo<'_>) -> String {
    let mut out = String::from("partition (partition_info through the doorbell)\n");
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "  {key:<10} {value}");
    };
    line("name", p.name.to_string());
    line("id", p.id.to_string());
    line("vcpus", p.vcpus.to_string());
    line("groups", groups(p.groups));
    line(
        "memory",
        if p.memory_size == 0 {
            // The primary: no fixed region, the RAM the others leave (see /proc/iomem).
            "no fixed region (the machine's remaining RAM)".into()
        } else {
            format!(
                "{:#x}+{:#x} (first region: {})",
                p.memory_base,
                p.memory_size,
                size(p.memory_size)
            )
        },
    );
    line(
        "ring",
        if p.ring_size == 0 {
            "none".into()
        } else {
            format!("{:#x}+{:#x}", p.ring_gpa, p.ring_size)
        },
    );
    line("cmdline", format!("{:?}", p.cmdline));
    out
}

/// The counters from `partition_stats`, in the hypervisor log's format (`exits: total=N
/// cpuid=M ...`, `hypercalls: name=N ...`) so one parser reads both.
pub fn stats(s: &PartitionStats<'_>) -> String {
    let mut out = format!(
        "partition stats (partition_stats through the doorbell, {} CPU(s))\n",
        s.vcpus
    );
    let _ = write!(out, "exits: total={}", s.exits_total);
    for c in s.exits.iter() {
        let _ = write!(out, " {}={}", c.name, c.count);
    }
    out.push_str("\nhypercalls:");
    let mut any = false;
    for c in s.calls.iter() {
        let _ = write!(out, " {}={}", c.name, c.count);
        any = true;
    }
    if s.invalid_calls != 0 {
        let _ = write!(out, " invalid={}", s.invalid_calls);
        any = true;
    }
    if !any {
        out.push_str(" none");
    }
    out.push('\n');
    out
}

/// One partition as `nexusctl partitions` shows it: its description and, for a managed
/// partition, its state word (`Err`: the status `partition_state` answered, e.g.
/// `PermissionDenied` for a partition that is not managed).
pub struct PartitionLine<'a> {
    pub info: PartitionInfo<'a>,
    pub state: Result<StateWord, Status>,
}

/// The `partitions` table: one line per partition, `id name cpus memory groups state`.
pub fn partitions(list: &[PartitionLine<'_>]) -> String {
    let mut out =
        String::from("partitions (partition_describe, partition_state through the doorbell)\n");
    for p in list {
        let i = &p.info;
        let memory = if i.memory_size == 0 {
            "remaining RAM".to_string()
        } else {
            format!("{:#x}+{}", i.memory_base, size(i.memory_size))
        };
        let state = match p.state {
            Ok(w) => managed_state(w),
            Err(Status::PermissionDenied) => "not managed (runs from boot)".to_string(),
            Err(s) => format!("state unknown: partition_state answered {s}"),
        };
        let _ = writeln!(
            out,
            "  {:<3} {:<16} {:>2} CPU(s)  {:<24} {:<44} {state}",
            i.id,
            i.name,
            i.vcpus,
            memory,
            groups(i.groups)
        );
    }
    out
}

/// `managed: running, 3 start(s), last run exited with code 0x600d`.
fn managed_state(w: StateWord) -> String {
    let state = match w.state {
        RunState::Stopped => "stopped",
        RunState::Running => "running",
        RunState::Stopping => "stopping",
    };
    let last = match w.last {
        LastStop::None => "no run ended yet".to_string(),
        LastStop::Exited => format!("last run exited with code {:#x}", w.exit_code),
        LastStop::Stopped => "last run stopped by a manager".to_string(),
        LastStop::Faulted => "last run stopped by the hypervisor (a fault)".to_string(),
    };
    format!("managed: {state}, {} start(s), {last}", w.starts)
}

/// What `exit-loop` measured.
pub fn exit_loop(count: u64, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!(
        "exit-loop: {count} CPUID exits in {secs:.3} s: {:.2} us per exit, {:.0} exits/s\n",
        secs * 1e6 / count as f64,
        count as f64 / secs.max(1e-9)
    )
}

fn transport(t: Transport) -> String {
    match t {
        Transport::Vmcall => "VMCALL".into(),
        Transport::Vmmcall => "VMMCALL".into(),
        Transport::PortIo { port } => format!("port I/O doorbell at {port:#x}"),
        Transport::Mmio { gpa } => format!("MMIO doorbell at {gpa:#x}"),
    }
}

fn features(f: Features) -> String {
    let mut names = Vec::new();
    let mut rest = f.0;
    for (bit, name) in [(Features::RING, "RING"), (Features::CONSOLE, "CONSOLE")] {
        if f.contains(bit) {
            names.push(name.to_string());
            rest &= !bit.0;
        }
    }
    if rest != 0 {
        names.push(format!("unknown {rest:#x}"));
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn groups(g: GroupSet) -> String {
    let names: Vec<&str> = g.iter().map(|g| g.name()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Binary size with the largest unit that divides it (`2GiB`, `1536MiB`, `4097B`).
fn size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_abi::cpuid::{Info, BASE_LEAF};
    use nexus_abi::{AbiVersion, Group};

    fn found(transport: Transport, doorbell: Option<u64>) -> Discovery {
        Discovery {
            base: BASE_LEAF,
            info: Info {
                version: AbiVersion::new(1, 1),
                transport,
                features: Features::CONSOLE,
                groups: GroupSet::EMPTY.with(Group::Management),
                doorbell,
            },
        }
    }

    #[test]
    fn discovery_block_lists_every_leaf_field() {
        let text = discovery(&found(Transport::Vmmcall, Some(0xfed0_0000)));
        assert_eq!(
            text,
            format!(
                "NexusOS found at CPUID 0x40000000\n\
                 \x20 abi        1.1 (nexusctl speaks {ABI_VERSION})\n\
                 \x20 transport  VMMCALL\n\
                 \x20 features   CONSOLE\n\
                 \x20 groups     management\n\
                 \x20 doorbell   0xfed00000 (user-space doorbell, root only)\n"
            )
        );
        let text = discovery(&found(Transport::Vmcall, None));
        assert!(text.contains("  doorbell   none\n"), "{text}");
        let text = discovery(&found(Transport::Mmio { gpa: 0xfeb0_0000 }, None));
        assert!(text.contains("MMIO doorbell at 0xfeb00000"), "{text}");
        assert!(text.contains("0xfeb00000 (the MMIO transport)"), "{text}");
    }

    #[test]
    fn features_and_groups_name_their_bits() {
        assert_eq!(features(Features(0)), "none");
        assert_eq!(features(Features(0b11)), "RING, CONSOLE");
        assert_eq!(features(Features(0x102)), "CONSOLE, unknown 0x100");
        assert_eq!(groups(GroupSet::EMPTY), "none");
        assert_eq!(
            groups(GroupSet::ALL),
            "management, models, gpu, tensors, containers, console"
        );
    }

    #[test]
    fn partition_block_shows_the_description() {
        let p = PartitionInfo {
            id: 0,
            vcpus: 2,
            groups: GroupSet::EMPTY.with(Group::Management),
            memory_base: 0,
            memory_size: 2 << 30,
            ring_gpa: 0,
            ring_size: 0,
            name: "primary",
            cmdline: "console=ttyS0",
        };
        let text = partition(&p);
        for want in [
            "  name       primary\n",
            "  vcpus      2\n",
            "  memory     0x0+0x80000000 (first region: 2GiB)\n",
            "  ring       none\n",
            "  cmdline    \"console=ttyS0\"\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let primary = PartitionInfo {
            memory_size: 0,
            ..p
        };
        assert!(partition(&primary)
            .contains("  memory     no fixed region (the machine's remaining RAM)\n"));
        assert_eq!(size(1536 << 20), "1536MiB");
        assert_eq!(size(4097), "4097B");
        assert_eq!(size(0), "0B");
    }

    #[test]
    fn the_partitions_table_shows_each_partition_and_the_managed_state() {
        let primary = PartitionInfo {
            id: 0,
            vcpus: 2,
            groups: GroupSet::EMPTY.with(Group::Management),
            memory_base: 0,
            memory_size: 0,
            ring_gpa: 0,
            ring_size: 0,
            name: "primary",
            cmdline: "",
        };
        let ai = PartitionInfo {
            id: 3,
            groups: GroupSet::EMPTY.with(Group::Console),
            memory_base: 0x4400_0000,
            memory_size: 16 << 20,
            name: "ai",
            ..primary
        };
        let exited = StateWord {
            state: RunState::Stopped,
            last: LastStop::Exited,
            starts: 13,
            exit_code: 0x600d,
        };
        let text = partitions(&[
            PartitionLine {
                info: primary,
                state: Err(Status::PermissionDenied),
            },
            PartitionLine {
                info: ai,
                state: Ok(exited),
            },
            PartitionLine {
                info: ai,
                state: Ok(StateWord {
                    state: RunState::Running,
                    last: LastStop::None,
                    ..exited
                }),
            },
            PartitionLine {
                info: ai,
                state: Err(Status::VersionMismatch),
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[1].starts_with("  0   primary           2 CPU(s)  remaining RAM"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(&format!(
                "{:<44} not managed (runs from boot)",
                "management"
            )),
            "{text}"
        );
        assert!(
            lines[2].starts_with("  3   ai                2 CPU(s)  0x44000000+16MiB"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("managed: stopped, 13 start(s), last run exited with code 0x600d"),
            "{text}"
        );
        assert!(
            lines[3].ends_with("managed: running, 13 start(s), no run ended yet"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("state unknown: partition_state answered version mismatch (-10)"),
            "{text}"
        );
    }

    #[test]
    fn stats_block_uses_the_hypervisor_logs_format() {
        use nexus_abi::ring::{Counter, List};
        let exits = [
            Counter {
                name: "cpuid",
                count: 2_000_000,
            },
            Counter {
                name: "npf",
                count: 12,
            },
        ];
        let calls = [Counter {
            name: "partition_stats",
            count: 1,
        }];
        let s = PartitionStats {
            vcpus: 2,
            exits_total: 2_000_012,
            exits: List::new(&exits),
            calls: List::new(&calls),
            invalid_calls: 0,
        };
        assert_eq!(
            stats(&s),
            "partition stats (partition_stats through the doorbell, 2 CPU(s))\n\
             exits: total=2000012 cpuid=2000000 npf=12\n\
             hypercalls: partition_stats=1\n"
        );
        let none = PartitionStats {
            calls: List::new(&[]),
            invalid_calls: 4,
            ..s
        };
        assert!(stats(&none).ends_with("hypercalls: invalid=4\n"));
        let text = exit_loop(2_000_000, std::time::Duration::from_secs(4));
        assert_eq!(
            text,
            "exit-loop: 2000000 CPUID exits in 4.000 s: 2.00 us per exit, 500000 exits/s\n"
        );
    }
}
