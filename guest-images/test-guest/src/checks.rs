//! What the test guest checks, as data: the command line, for each
//! hypercall it makes the status the ABI documents for it, and what the
//! XSETBV probe writes and reports.

use core::fmt;
use nexus_abi::{GroupSet, Hypercall, Status};

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Hypercalls,
    /// Read (with `write`: write) `addr`, outside the partition.
    Isolation {
        addr: u64,
        write: bool,
    },
    Fail,
    /// Fault-containment probes: each must stop only this partition.
    /// `ud2` with no IDT (a triple fault).
    TripleFault,
    /// `in` from a port the partition does not own.
    Port,
    /// `rdmsr` of an MSR the partition may not read (#GP, then a triple fault).
    Msr,
    /// `hlt` without `partition_exit`.
    Hlt,
    /// Start the partition's CPU `apic` with INIT and start-up IPIs (vector `vector`).
    ApStart {
        apic: u32,
        vector: u8,
    },
    /// Hostile probes (review M2, M4, M6, L1, L2, L8): each must be answered as the
    /// hypervisor documents and leave every other partition alone.
    Hostile(Attack),
    /// Stay busy for `yields` `yield` calls, then exit 0: a partition that is still running
    /// while something else (the primary) acts, and must not be disturbed by it.
    Spin {
        yields: u64,
    },
    /// Manage partition `id` through the management calls: bad calls first, then load,
    /// start, watch and stop small programs in it, ten start/exit cycles among them.
    Manage {
        id: u32,
    },
    Unknown,
}

/// What a hostile partition tries (its cmdline's first word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// INVD: drop dirty cache lines (of the host, of an SMT sibling).
    Invd,
    /// WBINVD in a loop: flush the shared caches under everyone.
    Wbinvd,
    /// RDPMC: read performance counters that also count the host.
    Rdpmc,
    /// MONITOR then MWAIT: park the CPU in an idle state.
    Mwait,
    /// `console_write` of 4 KiB, over and over.
    Flood,
    /// COM1 (`out 0x3f8`) byte by byte, over and over.
    FloodCom1,
    /// EFER, CR0 and CR4 writes with reserved bits or an illegal LME change.
    Registers,
    /// Hypercall buffers above MAXPHYADDR and above the 48 bits the tables translate.
    HighGpa,
    /// Read everything of its memory outside image, stack and page tables: it must be zero.
    Scan,
}

impl Attack {
    /// The cmdline word and the name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Attack::Invd => "invd",
            Attack::Wbinvd => "wbinvd",
            Attack::Rdpmc => "rdpmc",
            Attack::Mwait => "mwait",
            Attack::Flood => "flood",
            Attack::FloodCom1 => "flood-com1",
            Attack::Registers => "registers",
            Attack::HighGpa => "high-gpa",
            Attack::Scan => "scan",
        }
    }

    pub const ALL: [Attack; 9] = [
        Attack::Invd,
        Attack::Wbinvd,
        Attack::Rdpmc,
        Attack::Mwait,
        Attack::Flood,
        Attack::FloodCom1,
        Attack::Registers,
        Attack::HighGpa,
        Attack::Scan,
    ];
}

/// WBINVDs the `wbinvd` probe executes.
pub const WBINVD_LOOPS: u32 = 1000;
/// `console_write` calls of the `flood` probe (4 KiB each: 512 KiB, 32 times the budget's
/// burst).
pub const FLOOD_CALLS: u32 = 128;
/// Bytes the `flood-com1` probe sends through `console_write` first: the hypervisor's console
/// budget burst (`BUDGET_BURST`), so its COM1 bytes meet an empty bucket.
pub const FLOOD_COM1_FIRST: u32 = 16 * 1024;
/// Bytes the `flood-com1` probe then writes to COM1, one exit each: 32 s of the budget's
/// refill (2 KiB/s), so some must be dropped unless 64 Ki exits take longer than that.
pub const FLOOD_COM1_BYTES: u32 = 64 * 1024;
/// Bytes of one flood line, its newline included.
pub const FLOOD_LINE: usize = 64;

/// Fill `buf` with whole flood lines numbered from `first`: `flood NNNNNNNN xxxx...\n`.
/// Returns the next line number.
pub fn flood_lines(buf: &mut [u8], first: u32) -> u32 {
    let mut n = first;
    for line in buf.chunks_exact_mut(FLOOD_LINE) {
        line.fill(b'x');
        line[..6].copy_from_slice(b"flood ");
        let mut v = n;
        for d in line[6..14].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        line[14] = b' ';
        line[FLOOD_LINE - 1] = b'\n';
        n = n.wrapping_add(1);
    }
    n
}

/// What the `scan` probe reads: from the end of the image (page-aligned) to the bottom of
/// the stack the hypervisor placed below the page tables at the top of the region
/// (`partition::guest_setup`: 6 table pages, 64 KiB of stack). Empty if they cross.
pub fn scan_range(image_end: u64, region_base: u64, region_size: u64) -> (u64, u64) {
    const TABLE_PAGES: u64 = 6;
    const STACK: u64 = 64 * 1024;
    let start = (image_end + 0xfff) & !0xfff;
    let end = (region_base + region_size).saturating_sub(TABLE_PAGES * 4096 + STACK);
    (start, end.max(start))
}

/// The buffer addresses the `high-gpa` probe passes: its own memory with bit 48 set (an
/// alias the 9-bit table indices would make), and with the bit just above MAXPHYADDR
/// (`phys_bits`, CPUID 0x8000_0008) set when that is below 48.
pub fn high_gpas(own: u64, phys_bits: u32) -> ([u64; 2], usize) {
    let alias = own | 1 << 48;
    if phys_bits < 48 {
        ([alias, own | 1 << phys_bits], 2)
    } else {
        ([alias, 0], 1)
    }
}

/// What the AP trampoline writes last, once it ran ("PAUP" in memory order).
pub const AP_MARKER: u32 = 0x5055_4150;

/// The AP trampoline's report at offset 0x800 of its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApReport {
    pub marker: u32,
    /// CS as the start-up IPI loaded it.
    pub cs: u16,
    /// Where the trampoline's `call` returned to (an IP relative to CS).
    pub ip: u16,
    /// How often the trampoline ran.
    pub starts: u16,
}

/// A start-up IPI with `vector` must start the AP at `vector << 8 : 0`: the
/// recorded CS is `vector << 8` and the probe label sits at its offset
/// `probe` in the copied code (so IP started at 0).
pub fn check_ap_report(r: &ApReport, vector: u8, probe: u16) -> Result<(), &'static str> {
    if r.marker != AP_MARKER {
        return Err("the AP did not finish its code");
    }
    if r.cs != (vector as u16) << 8 {
        return Err("CS is not the start-up vector << 8");
    }
    if r.ip != probe {
        return Err("IP did not start at 0 (the call returned elsewhere)");
    }
    if r.starts != 1 {
        return Err("the AP started more than once");
    }
    Ok(())
}

/// Parse `cmdline`; `own_base` is the partition's first memory region.
pub fn parse_cmdline(cmdline: &str, own_base: u64) -> Mode {
    let mut words = cmdline.split_whitespace();
    match words.next() {
        Some("hypercalls") => Mode::Hypercalls,
        Some("fail") => Mode::Fail,
        Some("triple-fault") => Mode::TripleFault,
        Some("port") => Mode::Port,
        Some("msr") => Mode::Msr,
        Some("hlt") => Mode::Hlt,
        Some("ap-start") => {
            let apic = words.next().and_then(|w| w.parse().ok());
            let vector = words.next().and_then(parse_hex);
            match (apic, vector) {
                // A real-mode page below 1 MiB, not page 0 (the real-mode IVT).
                (Some(apic), Some(v)) if (1..=0xff).contains(&v) => Mode::ApStart {
                    apic,
                    vector: v as u8,
                },
                _ => Mode::Unknown,
            }
        }
        Some(word) if Attack::ALL.iter().any(|a| a.name() == word) => {
            let attack = Attack::ALL.into_iter().find(|a| a.name() == word);
            attack.map_or(Mode::Unknown, Mode::Hostile)
        }
        Some("spin") => match words.next().and_then(parse_count) {
            Some(yields) if yields > 0 => Mode::Spin { yields },
            _ => Mode::Unknown,
        },
        Some("manage") => match words.next().and_then(parse_count) {
            Some(id) if id <= u32::MAX as u64 => Mode::Manage { id: id as u32 },
            _ => Mode::Unknown,
        },
        Some("isolation") => {
            let mut addr = own_base.wrapping_sub(16 << 20);
            let mut write = false;
            for w in words {
                if w == "write" {
                    write = true;
                } else if let Some(a) = parse_hex(w) {
                    addr = a;
                }
            }
            Mode::Isolation { addr, write }
        }
        _ => Mode::Unknown,
    }
}

/// A decimal count, `_` separators allowed (`200_000`).
fn parse_count(word: &str) -> Option<u64> {
    let mut v: u64 = 0;
    let mut any = false;
    for c in word.chars().filter(|c| *c != '_') {
        v = v.checked_mul(10)?.checked_add(c.to_digit(10)? as u64)?;
        any = true;
    }
    any.then_some(v)
}

/// `0x`-prefixed hexadecimal, `_` separators allowed.
fn parse_hex(word: &str) -> Option<u64> {
    let digits = word.strip_prefix("0x")?;
    let mut v: u64 = 0;
    let mut any = false;
    for c in digits.chars().filter(|c| *c != '_') {
        v = v.checked_mul(16)?.checked_add(c.to_digit(16)? as u64)?;
        any = true;
    }
    any.then_some(v)
}

/// One hypercall and the status it must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub what: &'static str,
    pub number: u64,
    pub args: [u64; 6],
    pub expect: Status,
}

/// Most cases [`cases`] produces.
pub const MAX_CASES: usize = 40;

/// The hypercall checks for a partition holding `groups`. `inside` is an
/// 8-byte aligned address inside the partition (for buffer checks) and
/// `outside` one that is not.
pub fn cases(groups: GroupSet, inside: u64, outside: u64) -> ([Option<Case>; MAX_CASES], usize) {
    let mut out = [None; MAX_CASES];
    let mut n = 0;
    let mut push = |c: Case| {
        if n < MAX_CASES {
            out[n] = Some(c);
            n += 1;
        }
    };
    let permitted = |call: Hypercall, then: Status| {
        if groups.permits(call) {
            then
        } else {
            Status::PermissionDenied
        }
    };
    // Every AI call: valid arguments, no AI partition connected.
    for call in Hypercall::ALL.iter().filter(|c| c.uses_ring()) {
        push(Case {
            what: call.name(),
            number: call.number(),
            args: [0; 6],
            expect: permitted(*call, Status::ServiceUnavailable),
        });
    }
    // Arguments are validated before permission: same answer in any partition.
    push(Case {
        what: "ai_model_load, ring slot out of range",
        number: Hypercall::AiModelLoad.number(),
        args: [64, 0, 0, 0, 0, 0],
        expect: Status::InvalidArgument,
    });
    push(Case {
        what: "tensor_create, reserved argument set",
        number: Hypercall::TensorCreate.number(),
        args: [0, 0, 0, 0, 0, 1],
        expect: Status::InvalidArgument,
    });
    for (what, number) in [
        ("unassigned number 404 (models block)", 404),
        ("unassigned number 600", 600),
        ("number u64::MAX", u64::MAX),
    ] {
        push(Case {
            what,
            number,
            args: [0; 6],
            expect: Status::InvalidCall,
        });
    }
    push(Case {
        what: "version query",
        number: Hypercall::Version.number(),
        args: [0; 6],
        expect: Status::Success,
    });
    push(Case {
        what: "version 2.0",
        number: Hypercall::Version.number(),
        args: [0x0002_0000, 0, 0, 0, 0, 0],
        expect: Status::VersionMismatch,
    });
    push(Case {
        what: "console_write outside the partition",
        number: Hypercall::ConsoleWrite.number(),
        args: [outside, 4, 0, 0, 0, 0],
        expect: permitted(Hypercall::ConsoleWrite, Status::BadAddress),
    });
    push(Case {
        what: "console_write over the limit",
        number: Hypercall::ConsoleWrite.number(),
        args: [inside, 4097, 0, 0, 0, 0],
        expect: Status::LimitExceeded,
    });
    push(Case {
        what: "partition_info, 8-byte buffer",
        number: Hypercall::PartitionInfo.number(),
        args: [inside, 8, 0, 0, 0, 0],
        expect: permitted(Hypercall::PartitionInfo, Status::BufferTooSmall),
    });
    push(Case {
        what: "partition_info, misaligned buffer",
        number: Hypercall::PartitionInfo.number(),
        args: [inside + 1, 64, 0, 0, 0, 0],
        expect: Status::InvalidArgument,
    });
    push(Case {
        what: "yield",
        number: Hypercall::Yield.number(),
        args: [0; 6],
        expect: Status::Success,
    });
    // 1.5's management calls: arguments first, then the group.
    push(Case {
        what: "partition_state, 33-bit partition id",
        number: Hypercall::PartitionState.number(),
        args: [1 << 32, 0, 0, 0, 0, 0],
        expect: Status::InvalidArgument,
    });
    push(Case {
        what: "partition_describe of partition 0, 8-byte buffer",
        number: Hypercall::PartitionDescribe.number(),
        args: [0, inside, 8, 0, 0, 0],
        expect: permitted(Hypercall::PartitionDescribe, Status::BufferTooSmall),
    });
    (out, n)
}

/// XCR0 bits the probe uses (SDM Vol. 1 13.3).
pub const XCR0_X87: u64 = 1 << 0;
pub const XCR0_SSE: u64 = 1 << 1;
pub const XCR0_AVX: u64 = 1 << 2;
/// An XSETBV that must raise #GP: x87 (bit 0) clear.
pub const XCR0_INVALID: u64 = XCR0_SSE;

/// The XCR0 values the probe writes, in order: x87|SSE, then x87|SSE|AVX when
/// CPUID.(EAX=0xD,ECX=0) EDX:EAX (`supported`) has AVX.
pub fn xcr0_writes(supported: u64) -> ([u64; 2], usize) {
    let base = XCR0_X87 | XCR0_SSE;
    if supported & XCR0_AVX != 0 {
        ([base, base | XCR0_AVX], 2)
    } else {
        ([base, 0], 1)
    }
}

/// What the XSETBV probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsetbvProbe {
    /// XCR0 before the first write.
    pub initial: u64,
    /// (written, read back) pairs, the first `n` valid.
    pub writes: [(u64, u64); 2],
    pub n: usize,
    /// The #GP error code of the invalid write, `None` if it did not fault.
    pub gp: Option<u64>,
    /// XCR0 after the invalid write.
    pub after: u64,
}

impl XsetbvProbe {
    /// Every value read back as written, the invalid write faulted with #GP(0)
    /// and left XCR0 as it was.
    pub fn passed(&self) -> bool {
        let writes = &self.writes[..self.n];
        self.n > 0
            && writes.iter().all(|(w, r)| w == r)
            && self.gp == Some(0)
            && Some(self.after) == writes.last().map(|w| w.0)
    }
}

/// e.g. `xsetbv: XCR0 0x1, wrote 0x3 read 0x3, wrote 0x7 read 0x7, invalid 0x2 -> #GP(0x0), XCR0 after 0x7`
impl fmt::Display for XsetbvProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "xsetbv: XCR0 {:#x}", self.initial)?;
        for (w, r) in &self.writes[..self.n] {
            write!(f, ", wrote {w:#x} read {r:#x}")?;
        }
        write!(f, ", invalid {XCR0_INVALID:#x} -> ")?;
        match self.gp {
            Some(code) => write!(f, "#GP({code:#x})")?,
            None => f.write_str("no fault")?,
        }
        write!(f, ", XCR0 after {:#x}", self.after)
    }
}

/// The line printed when the CPU has no XSAVE (CPUID.1:ECX bit 26 clear).
pub const XSETBV_SKIPPED: &str = "xsetbv: skipped (no XSAVE)";

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_abi::Group;

    #[test]
    fn ap_start_command_line_and_report() {
        assert_eq!(
            parse_cmdline("ap-start 2 0x20", 0),
            Mode::ApStart {
                apic: 2,
                vector: 0x20
            }
        );
        for bad in [
            "ap-start",
            "ap-start 2",
            "ap-start x 0x20",
            "ap-start 2 0x100",
            "ap-start 2 0x0",
        ] {
            assert_eq!(parse_cmdline(bad, 0), Mode::Unknown, "{bad}");
        }
        let good = ApReport {
            marker: AP_MARKER,
            cs: 0x2000,
            ip: 0x11,
            starts: 1,
        };
        assert_eq!(check_ap_report(&good, 0x20, 0x11), Ok(()));
        assert!(check_ap_report(&good, 0x21, 0x11).is_err(), "wrong CS");
        assert!(
            check_ap_report(&good, 0x20, 0x12).is_err(),
            "IP did not start at 0"
        );
        let twice = ApReport { starts: 2, ..good };
        assert!(check_ap_report(&twice, 0x20, 0x11).is_err(), "restarted");
        let unfinished = ApReport { marker: 0, ..good };
        assert!(check_ap_report(&unfinished, 0x20, 0x11).is_err());
        assert_eq!(&AP_MARKER.to_le_bytes(), b"PAUP");
    }

    #[test]
    fn hostile_command_lines() {
        for a in Attack::ALL {
            assert_eq!(parse_cmdline(a.name(), 0), Mode::Hostile(a));
            assert_eq!(
                parse_cmdline(&std::format!("{} expect=exit0", a.name()), 0),
                Mode::Hostile(a)
            );
        }
        assert_eq!(parse_cmdline("floods", 0), Mode::Unknown);
    }

    #[test]
    fn flood_lines_are_whole_and_numbered() {
        let mut buf = [0u8; 4096];
        assert_eq!(flood_lines(&mut buf, 7), 7 + 64);
        let text = core::str::from_utf8(&buf).unwrap();
        let lines: std::vec::Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 64);
        assert!(lines[0].starts_with("flood 00000007 xxx"), "{}", lines[0]);
        assert!(lines[63].starts_with("flood 00000070 "));
        assert!(lines.iter().all(|l| l.len() == FLOOD_LINE - 1));
    }

    #[test]
    fn scan_covers_the_free_middle_of_the_region() {
        // A 16 MiB region at 1 GiB, image ending inside its second page.
        let (s, e) = scan_range(0x4000_1234, 0x4000_0000, 16 << 20);
        assert_eq!(s, 0x4000_2000);
        assert_eq!(e, 0x4100_0000 - 6 * 4096 - 64 * 1024);
        assert_eq!(
            scan_range(0x4100_0000, 0x4000_0000, 16 << 20).1,
            0x4100_0000
        );
    }

    #[test]
    fn high_gpas_alias_and_exceed_the_width() {
        assert_eq!(
            high_gpas(0x4000_0000, 39),
            ([0x1_0000_4000_0000, 0x80_4000_0000], 2)
        );
        assert_eq!(high_gpas(0x4000_0000, 52).1, 1);
    }

    #[test]
    fn command_lines() {
        assert_eq!(parse_cmdline("hypercalls", 0), Mode::Hypercalls);
        assert_eq!(parse_cmdline(" fail ", 0), Mode::Fail);
        assert_eq!(
            parse_cmdline("isolation", 0x4100_0000),
            Mode::Isolation {
                addr: 0x4000_0000,
                write: false
            }
        );
        assert_eq!(
            parse_cmdline("isolation write 0x10_0000", 0x4200_0000),
            Mode::Isolation {
                addr: 0x10_0000,
                write: true
            }
        );
        assert_eq!(
            parse_cmdline("isolation 0xzz", 0x4200_0000),
            Mode::Isolation {
                addr: 0x4100_0000,
                write: false
            }
        );
        assert_eq!(
            parse_cmdline("triple-fault expect=triple-fault", 0),
            Mode::TripleFault
        );
        assert_eq!(parse_cmdline("port expect=port-denied", 0), Mode::Port);
        assert_eq!(parse_cmdline("msr", 0), Mode::Msr);
        assert_eq!(parse_cmdline("hlt expect=halted", 0), Mode::Hlt);
        assert_eq!(parse_cmdline("", 0), Mode::Unknown);
        assert_eq!(parse_cmdline("hypercall", 0), Mode::Unknown);
    }

    #[test]
    fn spin_command_line() {
        assert_eq!(
            parse_cmdline("spin 200_000", 0),
            Mode::Spin { yields: 200_000 }
        );
        assert_eq!(
            parse_cmdline("spin 7 expect=exit0", 0),
            Mode::Spin { yields: 7 }
        );
        // a count is required, positive, decimal, and fits 64 bits
        for bad in [
            "spin",
            "spin 0",
            "spin -5",
            "spin 0x10",
            "spin 99999999999999999999",
        ] {
            assert_eq!(parse_cmdline(bad, 0), Mode::Unknown, "{bad}");
        }
    }

    #[test]
    fn manage_command_line() {
        assert_eq!(parse_cmdline("manage 3", 0), Mode::Manage { id: 3 });
        for bad in ["manage", "manage x", "manage 4294967296"] {
            assert_eq!(parse_cmdline(bad, 0), Mode::Unknown, "{bad}");
        }
    }

    #[test]
    fn expectations_follow_the_groups() {
        let all = cases(GroupSet::ALL, 0x4000_1000, 0x1000);
        let mgmt = cases(GroupSet::EMPTY.with(Group::Console), 0x4000_1000, 0x1000);
        assert_eq!(all.1, mgmt.1);
        assert_eq!(all.1, 35, "the hypercalls partition's check count");
        let find = |c: &([Option<Case>; MAX_CASES], usize), what: &str| {
            c.0[..c.1]
                .iter()
                .flatten()
                .find(|x| x.what == what)
                .copied()
                .unwrap()
        };
        for call in [
            "ai_model_load",
            "gpu_alloc",
            "tensor_stream",
            "k8s_schedule",
        ] {
            assert_eq!(find(&all, call).expect, Status::ServiceUnavailable);
            assert_eq!(find(&mgmt, call).expect, Status::PermissionDenied);
        }
        // one call of each AI group at least
        let numbers: std::vec::Vec<u64> =
            all.0[..all.1].iter().flatten().map(|c| c.number).collect();
        for g in [Group::Models, Group::Gpu, Group::Tensors, Group::Containers] {
            assert!(numbers.iter().any(|n| g.range().contains(n)), "{g}");
        }
        let none = cases(GroupSet::EMPTY, 0x4000_1000, 0x1000);
        assert_eq!(
            find(&none, "console_write outside the partition").expect,
            Status::PermissionDenied
        );
        assert_eq!(find(&none, "version query").expect, Status::Success);
        let describe = "partition_describe of partition 0, 8-byte buffer";
        assert_eq!(find(&all, describe).expect, Status::BufferTooSmall);
        assert_eq!(find(&mgmt, describe).expect, Status::PermissionDenied);
        assert!(all.1 <= MAX_CASES);
    }

    #[test]
    fn xcr0_values_follow_the_cpu() {
        assert_eq!(xcr0_writes(0x7), ([0x3, 0x7], 2));
        assert_eq!(xcr0_writes(0x2e7), ([0x3, 0x7], 2));
        assert_eq!(xcr0_writes(0x3).1, 1);
        assert_eq!(xcr0_writes(0x3).0[0], 0x3);
    }

    #[test]
    fn xsetbv_report_line_and_verdict() {
        let p = XsetbvProbe {
            initial: 0x1,
            writes: [(0x3, 0x3), (0x7, 0x7)],
            n: 2,
            gp: Some(0),
            after: 0x7,
        };
        assert_eq!(
            std::format!("{p}"),
            "xsetbv: XCR0 0x1, wrote 0x3 read 0x3, wrote 0x7 read 0x7, invalid 0x2 -> #GP(0x0), XCR0 after 0x7"
        );
        assert!(p.passed());
        let one = XsetbvProbe {
            writes: [(0x3, 0x3), (0, 0)],
            n: 1,
            after: 0x3,
            ..p
        };
        assert!(one.passed());
        assert!(
            std::format!("{one}").ends_with("read 0x3, invalid 0x2 -> #GP(0x0), XCR0 after 0x3")
        );
        let no_fault = XsetbvProbe { gp: None, ..p };
        assert!(!no_fault.passed());
        assert!(std::format!("{no_fault}").contains("invalid 0x2 -> no fault"));
        assert!(!XsetbvProbe {
            writes: [(0x3, 0x3), (0x7, 0x3)],
            ..p
        }
        .passed());
        assert!(!XsetbvProbe { gp: Some(8), ..p }.passed());
        assert!(
            !XsetbvProbe { after: 0x2, ..p }.passed(),
            "the invalid value must not stick"
        );
        assert!(!XsetbvProbe { n: 0, ..p }.passed());
    }
}
