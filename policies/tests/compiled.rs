//! Compiled form: round trips, and the decoder's refusals.

use nexus_policy::compiled::format::*;
use nexus_policy::compiled::{checksum, CompiledPolicy, CpuEntry, DecodeError};
use nexus_policy::{
    compile, decompile, load_file, parse_str, CoreClass, Group, MemoryType, Policy, Role,
};

fn shipped(name: &str) -> Policy {
    load_file(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A layout that uses every feature the shipped ones do not: shared regions,
/// APIC IDs and class counts on a listed machine, named PCI devices, a GPU
/// without BDF.
const EVERYTHING: &str = r#"
[machine]
name = "everything"
memory = "4GiB"
hypervisor_memory = { base = 0xC020_0000, size = "64MiB" }
cpus = [
    { apic_id = 0, class = "P" }, { apic_id = 2, class = "P" },
    { apic_id = 8, class = "E" }, { apic_id = 9, class = "E" },
]
pci = [{ bdf = "0000:00:1f.3", name = "audio" }, { bdf = "0001:02:00.0" }]
gpu = { name = "small", vram = "2GiB" }

[[partition]]
name = "host"
role = "primary"
apic_ids = [0]
pci = ["0000:00:1f.3"]
abi_groups = []
boot = '\EFI\Linux\kernel.efi'
cmdline = 'root=/dev/nvme0n1p2 initrd=\EFI\Linux\initrd.img quiet'
memory = [
    { base = 0, size = "1GiB", type = "ram" },
    { base = "1GiB", size = "2MiB", type = "shared", shared_with = ["lab", "ai"] },
]

[[partition]]
name = "ai"
role = "ai"
cpus = [{ class = "E", count = 2 }]
memory = [{ base = "2GiB", size = "1GiB", type = "model-cache" }]
abi_groups = ["tensors", "models"]

[[partition]]
name = "lab"
role = "test"
apic_ids = [2]
pci = ["0001:02:00.0"]
image = "test-guest"
cmdline = "hypercalls verbose=1"
memory = [{ base = 0xC000_0000, size = 4096, type = "ram" }]

[[vram]]
name = "a"
size = "1GiB"
owner = "ai"

[[vram]]
name = "b"
size = "512MiB"
owner = "host"
"#;

fn round_trip(policy: &Policy) {
    let blob = compile(policy);
    let decoded = CompiledPolicy::decode(&blob).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded.version(), (1, VERSION_MINOR));
    assert_eq!(&decompile(&decoded), policy);
}

#[test]
fn shipped_layouts_round_trip() {
    for name in ["i9-13900hx-rtx4080.toml", "qemu-dev.toml", "qemu-fail.toml"] {
        round_trip(&shipped(name));
    }
}

#[test]
fn every_feature_round_trips() {
    round_trip(&parse_str(EVERYTHING).unwrap());
}

#[test]
fn accessors_read_what_the_hypervisor_needs() {
    let blob = compile(&shipped("qemu-dev.toml"));
    let c = CompiledPolicy::decode(&blob).unwrap();
    assert_eq!(c.machine().memory(), 2 << 30);
    assert_eq!(
        c.machine().cpus().map(|x| x.apic_id).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(c.machine().cpu_counts().is_none());
    assert_eq!(c.partition_count(), 4);
    let hc = c.partition_by_name("hypercalls").unwrap();
    assert_eq!(hc.index(), 1);
    assert_eq!(hc.role(), Role::Test);
    assert_eq!(hc.image(), Some("test-guest"));
    assert_eq!(hc.cmdline(), Some("hypercalls"));
    // Every group with calls: the console and the four AI groups (no management call
    // exists yet, and test partitions get none).
    assert!(Group::ALL
        .iter()
        .filter(|g| **g != Group::Management)
        .all(|g| hc.groups().contains(*g)));
    assert!(!hc.groups().contains(Group::Management));
    assert_eq!(hc.cpus().collect::<Vec<_>>(), [CpuEntry::ApicId(2)]);
    let mem: Vec<_> = hc
        .memory()
        .map(|r| (r.base(), r.size(), r.kind()))
        .collect();
    assert_eq!(mem, [(0x4000_0000, 16 << 20, MemoryType::Ram)]);
    let primary = c.partition(0).unwrap();
    assert!(primary.memory_remainder());
    assert_eq!(primary.memory().len(), 0);
    assert_eq!(primary.image(), None);
    assert_eq!(primary.boot(), Some("\\NEXUS\\VMLINUZ.EFI"));
    assert_eq!(
        primary.cmdline(),
        Some("initrd=\\NEXUS\\INITRD.IMG console=ttyS0 panic=-1")
    );
    assert_eq!(hc.boot(), None);
    let hv = c.partition(3).unwrap();
    assert_eq!(hv.name(), "isolation-hv");
    assert_eq!(hv.cmdline(), Some("isolation write 0x4200_0000"));
    assert!(c.partition(4).is_none());

    let blob = compile(&shipped("i9-13900hx-rtx4080.toml"));
    let c = CompiledPolicy::decode(&blob).unwrap();
    let counts = c.machine().cpu_counts().unwrap();
    assert_eq!(
        (counts.get(CoreClass::P), counts.get(CoreClass::E)),
        (16, 16)
    );
    assert_eq!(c.machine().gpu().unwrap().vram, 16 << 30);
    let ai = c.partition_by_name("ai").unwrap();
    assert_eq!(
        ai.cpus().collect::<Vec<_>>(),
        [CpuEntry::Class {
            class: CoreClass::P,
            count: 8
        }]
    );
    let vram: Vec<_> = ai
        .vram()
        .map(|v| (v.name(), v.offset(), v.size()))
        .collect();
    assert_eq!(
        vram,
        [
            ("model-storage", 0, 8 << 30),
            ("inference-cache", 8 << 30, 4 << 30)
        ]
    );
    let gaming = c.vram_regions().last().unwrap();
    assert_eq!(
        (gaming.offset(), gaming.owner().unwrap().name()),
        (12 << 30, "primary")
    );
    assert!(c.partition_by_name("primary").unwrap().low_latency());

    let blob = compile(&parse_str(EVERYTHING).unwrap());
    let c = CompiledPolicy::decode(&blob).unwrap();
    let shared = c.partition(0).unwrap().memory().nth(1).unwrap();
    assert_eq!(shared.kind(), MemoryType::Shared);
    assert_eq!(shared.shared_with().collect::<Vec<_>>(), [2, 1]);
}

#[test]
fn compiled_form_is_deterministic_and_starts_with_the_header() {
    let policy = shipped("qemu-dev.toml");
    let blob = compile(&policy);
    assert_eq!(blob, compile(&policy));
    assert_eq!(&blob[..8], b"NXPOLICY");
    assert_eq!(u16::from_le_bytes([blob[8], blob[9]]), VERSION_MAJOR);
    assert_eq!(
        u32::from_le_bytes(blob[12..16].try_into().unwrap()) as usize,
        blob.len()
    );
    assert_eq!(
        u32::from_le_bytes(blob[16..20].try_into().unwrap()),
        checksum(&blob)
    );
}

/// Overwrites bytes and fixes the checksum, so the structural checks behind it run.
fn patch(blob: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut b = blob.to_vec();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = checksum(&b);
    b[HDR_CRC..HDR_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn section_offset(blob: &[u8], section: usize) -> usize {
    let at = HEADER_LEN + section * SECTION_ENTRY_LEN;
    u32::from_le_bytes(blob[at..at + 4].try_into().unwrap()) as usize
}

#[test]
fn decoder_refuses_damaged_blobs() {
    let blob = compile(&parse_str(EVERYTHING).unwrap());
    let decode = |b: &[u8]| CompiledPolicy::decode(b).map(|_| ()).unwrap_err();

    assert_eq!(
        decode(&blob[..10]),
        DecodeError::Truncated {
            needed: HEADER_LEN,
            actual: 10
        }
    );
    let short = &blob[..blob.len() - 1];
    assert_eq!(
        decode(short),
        DecodeError::Truncated {
            needed: blob.len(),
            actual: blob.len() - 1
        }
    );
    let mut long = blob.clone();
    long.push(0);
    assert_eq!(
        decode(&long),
        DecodeError::TrailingBytes {
            stated: blob.len(),
            actual: blob.len() + 1
        }
    );

    assert_eq!(decode(&patch(&blob, 0, b"X")), DecodeError::BadMagic);
    assert_eq!(
        decode(&patch(&blob, HDR_MAJOR, &2u16.to_le_bytes())),
        DecodeError::UnsupportedVersion {
            major: 2,
            minor: VERSION_MINOR
        }
    );

    let mut flipped = blob.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(decode(&flipped), DecodeError::BadChecksum { .. }));

    assert_eq!(
        decode(&patch(&blob, HDR_SECTION_COUNT, &3u16.to_le_bytes())),
        DecodeError::TooFewSections { count: 3 }
    );

    // Memory section claims one record more than the blob holds.
    let entry = HEADER_LEN + SEC_MEMORY * SECTION_ENTRY_LEN;
    let mem_count = u32::from_le_bytes(blob[entry + 4..entry + 8].try_into().unwrap());
    let bad = patch(&blob, entry + 4, &(mem_count + 1000).to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::SectionOutOfBounds {
            section: SEC_MEMORY
        }
    );
    let bad = patch(&blob, entry + 8, &4u32.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::RecordTooSmall {
            section: SEC_MEMORY,
            size: 4
        }
    );

    // Partition 0's role byte -> unknown role.
    let p0 = section_offset(&blob, SEC_PARTITIONS);
    assert_eq!(
        decode(&patch(&blob, p0 + P_ROLE, &[9])),
        DecodeError::BadCode {
            section: SEC_PARTITIONS,
            index: 0
        }
    );
    // Group bits no group uses.
    let bad = patch(&blob, p0 + P_GROUPS, &0x8000_0000u32.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::BadFlags {
            section: SEC_PARTITIONS,
            index: 0
        }
    );
    // Memory range pointing past the memory section.
    let bad = patch(&blob, p0 + P_MEMORY, &100u32.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::IndexOutOfRange {
            section: SEC_PARTITIONS,
            index: 0
        }
    );
    // Name string pointing past the string table.
    let bad = patch(&blob, p0 + P_NAME, &0xffff_0000u32.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::BadString {
            section: SEC_PARTITIONS,
            index: 0
        }
    );
    // Required name absent.
    let mut absent = Vec::new();
    absent.extend_from_slice(&STR_ABSENT.to_le_bytes());
    absent.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        decode(&patch(&blob, p0 + P_NAME, &absent)),
        DecodeError::MissingString {
            section: SEC_PARTITIONS,
            index: 0
        }
    );
    // VRAM owner index past the partitions.
    let v0 = section_offset(&blob, SEC_VRAM);
    let bad = patch(&blob, v0 + V_OWNER, &7u16.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::IndexOutOfRange {
            section: SEC_VRAM,
            index: 0
        }
    );
    // shared_with index past the partitions.
    let s0 = section_offset(&blob, SEC_SHARED_WITH);
    let bad = patch(&blob, s0, &3u16.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::IndexOutOfRange {
            section: SEC_SHARED_WITH,
            index: 0
        }
    );
    // Memory regions the hypervisor must never map: overlapping, misaligned, empty.
    let m0 = section_offset(&blob, SEC_MEMORY);
    let m1 = m0 + RECORD_SIZE[SEC_MEMORY];
    let bad = patch(&blob, m1 + R_BASE, &0x1000u64.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::Overlap {
            first: 0,
            second: 1
        }
    );
    let bad = patch(&blob, m1 + R_BASE, &0x4000_0800u64.to_le_bytes());
    assert_eq!(decode(&bad), DecodeError::BadRegion { index: 1 });
    let bad = patch(&blob, m0 + R_SIZE, &0u64.to_le_bytes());
    assert_eq!(decode(&bad), DecodeError::BadRegion { index: 0 });
    let bad = patch(&blob, m0 + R_BASE, &(u64::MAX - 0xfff).to_le_bytes());
    assert_eq!(decode(&bad), DecodeError::BadRegion { index: 0 });
    // Invalid UTF-8 in the string table.
    let strings = section_offset(&blob, SEC_STRINGS);
    assert!(matches!(
        decode(&patch(&blob, strings, &[0xff])),
        DecodeError::BadString { .. }
    ));

    // Messages are readable.
    assert_eq!(
        DecodeError::IndexOutOfRange {
            section: SEC_VRAM,
            index: 0
        }
        .to_string(),
        "compiled policy vram[0]: index out of range"
    );
}

/// Rebuilds `old` with format minor version `minor`, `extra` more (empty) sections and each
/// section's records cut or grown (with 0xAA bytes) to `size(section, old_size)`.
fn relayout(old: &[u8], minor: u16, extra: usize, size: impl Fn(usize, usize) -> usize) -> Vec<u8> {
    let sections = SECTION_COUNT + extra;
    let mut body: Vec<Vec<u8>> = Vec::new();
    let mut table = Vec::new();
    let mut at = HEADER_LEN + sections * SECTION_ENTRY_LEN;
    for s in 0..sections {
        let (count, new_size, bytes) = if s < SECTION_COUNT {
            let e = HEADER_LEN + s * SECTION_ENTRY_LEN;
            let word =
                |o: usize| u32::from_le_bytes(old[e + o..e + o + 4].try_into().unwrap()) as usize;
            let (off, count, old_size) = (word(0), word(4), word(8));
            let new_size = size(s, old_size);
            let mut bytes = Vec::new();
            for r in 0..count {
                let rec = &old[off + r * old_size..off + (r + 1) * old_size];
                let mut rec = rec[..new_size.min(old_size)].to_vec();
                rec.resize(new_size, 0xAA);
                bytes.extend_from_slice(&rec);
            }
            (count, new_size, bytes)
        } else {
            (0, 16, Vec::new())
        };
        for v in [at, count, new_size] {
            table.extend_from_slice(&(v as u32).to_le_bytes());
        }
        at += bytes.len();
        body.push(bytes);
    }
    let mut blob = old[..HEADER_LEN].to_vec();
    blob[HDR_MINOR..HDR_MINOR + 2].copy_from_slice(&minor.to_le_bytes());
    blob[HDR_SECTION_COUNT..HDR_SECTION_COUNT + 2]
        .copy_from_slice(&(sections as u16).to_le_bytes());
    blob.extend_from_slice(&table);
    body.iter().for_each(|b| blob.extend_from_slice(b));
    let len = blob.len() as u32;
    blob[HDR_TOTAL_LEN..HDR_TOTAL_LEN + 4].copy_from_slice(&len.to_le_bytes());
    patch(&blob, 0, b"N")
}

#[test]
fn newer_minor_versions_with_longer_records_and_more_sections_decode() {
    // Rebuild the qemu-dev blob as a hypothetical next minor version: one extra (empty)
    // section and 8 extra bytes at the end of every partition record.
    let policy = shipped("qemu-dev.toml");
    let next = VERSION_MINOR + 1;
    let blob = relayout(&compile(&policy), next, 1, |s, size| {
        if s == SEC_PARTITIONS {
            size + 8
        } else {
            size
        }
    });
    let c = CompiledPolicy::decode(&blob).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.version(), (1, next));
    assert_eq!(decompile(&c), policy);
}

#[test]
fn version_1_0_blobs_without_hypervisor_memory_still_decode() {
    // A 1.0 machine record is 48 bytes: it ends before hypervisor_memory.
    let mut policy = shipped("qemu-dev.toml");
    assert!(policy.machine.hypervisor_memory.is_some());
    let blob = relayout(&compile(&policy), 0, 0, |s, size| {
        if s == SEC_MACHINE {
            48
        } else {
            size
        }
    });
    let c = CompiledPolicy::decode(&blob).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.version(), (1, 0));
    assert_eq!(c.machine().hypervisor_memory(), None);
    policy.machine.hypervisor_memory = None;
    assert_eq!(decompile(&c), policy);
    // And a current blob of a policy without it says so with size 0.
    let plain = compile(&policy);
    let c = CompiledPolicy::decode(&plain).unwrap();
    assert_eq!(c.version(), (1, VERSION_MINOR));
    assert_eq!(c.machine().hypervisor_memory(), None);
}

#[test]
fn version_1_1_blobs_without_boot_still_decode() {
    // A 1.1 partition record is 64 bytes: it ends before `boot`.
    let mut policy = shipped("qemu-dev.toml");
    assert!(policy.partitions[0].boot.is_some());
    let blob = relayout(&compile(&policy), 1, 0, |s, size| {
        if s == SEC_PARTITIONS {
            64
        } else {
            size
        }
    });
    let c = CompiledPolicy::decode(&blob).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.version(), (1, 1));
    assert_eq!(c.partition(0).unwrap().boot(), None);
    policy.partitions[0].boot = None;
    assert_eq!(decompile(&c), policy);
    // A current blob of a policy without `boot` marks it absent.
    let c = compile(&policy);
    assert_eq!(
        CompiledPolicy::decode(&c)
            .unwrap()
            .partition(0)
            .unwrap()
            .boot(),
        None
    );
}

#[test]
fn decoder_checks_the_boot_path_again() {
    let blob = compile(&shipped("qemu-dev.toml"));
    let p0 = section_offset(&blob, SEC_PARTITIONS);
    let p1 = p0 + WRITTEN_RECORD_SIZE[SEC_PARTITIONS];
    let decode = |b: &[u8]| CompiledPolicy::decode(b).map(|_| ()).unwrap_err();
    // The primary's boot string reference, copied onto a test partition.
    let boot_ref = blob[p0 + P_BOOT..p0 + P_BOOT + STR_REF_LEN].to_vec();
    assert_eq!(
        decode(&patch(&blob, p1 + P_BOOT, &boot_ref)),
        DecodeError::BadBoot { index: 1 }
    );
    // The path itself damaged in the string table: '\\NEXUS\\' -> '/NEXUS\\'.
    let start = u32::from_le_bytes(boot_ref[..4].try_into().unwrap()) as usize;
    let strings = section_offset(&blob, SEC_STRINGS);
    assert_eq!(blob[strings + start], b'\\');
    assert_eq!(
        decode(&patch(&blob, strings + start, b"/")),
        DecodeError::BadBoot { index: 0 }
    );
    // A reference outside the string table.
    assert_eq!(
        decode(&patch(&blob, p0 + P_BOOT, &0xffff_0000u32.to_le_bytes())),
        DecodeError::BadString {
            section: SEC_PARTITIONS,
            index: 0
        }
    );
}

#[test]
fn decoder_checks_the_hypervisor_memory_again() {
    let blob = compile(&shipped("qemu-dev.toml"));
    let c = CompiledPolicy::decode(&blob).unwrap();
    assert_eq!(
        c.machine().hypervisor_memory(),
        Some((0x4200_0000, 32 << 20))
    );
    let m = section_offset(&blob, SEC_MACHINE);
    let decode = |b: &[u8]| CompiledPolicy::decode(b).map(|_| ()).unwrap_err();
    // Not 2 MiB aligned.
    let bad = patch(&blob, m + M_HV_BASE, &0x4210_0000u64.to_le_bytes());
    assert_eq!(decode(&bad), DecodeError::BadHypervisorMemory);
    // Past the 52-bit physical address space.
    let bad = patch(&blob, m + M_HV_BASE, &(1u64 << 52).to_le_bytes());
    assert_eq!(decode(&bad), DecodeError::BadHypervisorMemory);
    // Onto the hypercalls partition's region (memory[0] at 0x4000_0000).
    let bad = patch(&blob, m + M_HV_BASE, &0x4000_0000u64.to_le_bytes());
    assert_eq!(
        decode(&bad),
        DecodeError::HypervisorMemoryOverlap { index: 0 }
    );
    assert_eq!(
        DecodeError::HypervisorMemoryOverlap { index: 0 }.to_string(),
        "compiled policy machine: hypervisor_memory overlaps memory[0]"
    );
}

/// ABI 1.4 (compiled format 1.3) split `console` from `management`. Policies compiled before
/// the split grant test partitions `management` for their console: such blobs still decode,
/// and the group set still permits console_write, partition_info and partition_stats
/// (management includes console), so they run as before. The new name compiles to its own
/// bit.
#[test]
fn policies_granting_management_for_the_console_still_decode_and_print() {
    use nexus_abi::Hypercall;
    use nexus_policy::groups::GroupSet;
    let before_split = shipped("qemu-dev.toml");
    let mut old = before_split.clone();
    for p in old.partitions.iter_mut().filter(|p| p.role == Role::Test) {
        p.abi_groups = GroupSet::EMPTY.with(Group::Management);
    }
    let blob = compile(&old);
    let c = CompiledPolicy::decode(&blob).unwrap_or_else(|e| panic!("{e}"));
    let iso = c.partition_by_name("isolation").unwrap();
    assert_eq!(iso.groups().bits(), 1, "bit 0: management");
    assert!(iso.groups().permits(Hypercall::ConsoleWrite));
    assert!(iso.groups().permits(Hypercall::PartitionInfo));
    assert!(iso.groups().permits(Hypercall::PartitionStats));
    assert!(!iso.groups().permits(Hypercall::AiModelLoad));
    let new = compile(&before_split);
    let c = CompiledPolicy::decode(&new).unwrap();
    let iso = c.partition_by_name("isolation").unwrap();
    assert_eq!(iso.groups(), GroupSet::EMPTY.with(Group::Console));
    assert_eq!(Group::Console.bit(), 1 << 5);
}

/// 1.3: `share_smt_core` is a partition flag; it round-trips, and a 1.2 blob (which cannot
/// hold it) decodes with every partition refusing to share a core.
#[test]
fn share_smt_core_round_trips_and_defaults_to_no_sharing() {
    let mut policy = shipped("i9-13900hx-rtx4080.toml");
    assert!(policy.partitions.iter().all(|p| !p.share_smt_core));
    policy.partitions[1].share_smt_core = true;
    let blob = compile(&policy);
    let c = CompiledPolicy::decode(&blob).unwrap();
    assert!(c.partition(1).unwrap().share_smt_core());
    assert!(!c.partition(0).unwrap().share_smt_core());
    assert_eq!(decompile(&c), policy);
    let old = relayout(&compile(&shipped("qemu-dev.toml")), 2, 0, |_, size| size);
    let c = CompiledPolicy::decode(&old).unwrap();
    assert_eq!(c.version(), (1, 2));
    assert!(c.partitions().all(|p| !p.share_smt_core()));
}
