//! Invalid layouts: each one must fail with its own specific error, naming the
//! partition and the field. Every case breaks exactly one rule on top of a
//! valid base layout, so each test also asserts there is no other error.

use nexus_policy::{parse_str, Bdf, CoreClass, PolicyError, Span, ValidationError as E};

/// A small valid machine: 2 P + 2 E CPUs, 1 GiB, an 8 GiB GPU, two PCI functions.
const MACHINE: &str = r#"
[machine]
name = "test box"
memory = "1GiB"
cpus = [
    { apic_id = 0, class = "P" },
    { apic_id = 1, class = "P" },
    { apic_id = 2, class = "E" },
    { apic_id = 3, class = "E" },
]
[machine.gpu]
name = "gpu"
vram = "8GiB"
bdf = "01:00.0"
[[machine.pci]]
bdf = "01:00.0"
[[machine.pci]]
bdf = "02:00.0"
"#;

const PRIMARY: &str = r#"
[[partition]]
name = "primary"
role = "primary"
apic_ids = [0]
pci = ["01:00.0"]
[[partition.memory]]
base = 0
size = "256MiB"
type = "ram"
"#;

/// An AI partition with one CPU and one region; `extra` is spliced into its table.
fn ai(extra: &str, memory: &str) -> String {
    format!("\n[[partition]]\nname = \"ai\"\nrole = \"ai\"\n{extra}\n{memory}\n")
}

const AI_MEM: &str =
    "[[partition.memory]]\nbase = 0x1000_0000\nsize = \"16MiB\"\ntype = \"model-cache\"\n";

fn layout(rest: &str) -> String {
    format!("{MACHINE}{PRIMARY}{rest}")
}

/// The single validation error of `text`.
fn only_error(text: &str) -> E {
    match parse_str(text) {
        Ok(_) => panic!("layout was accepted:\n{text}"),
        Err(PolicyError::Invalid { errors, .. }) => {
            assert_eq!(
                errors.len(),
                1,
                "expected exactly one error, got {errors:#?}"
            );
            errors.into_iter().next().unwrap()
        }
        Err(other) => panic!("expected a validation error, got: {other}"),
    }
}

/// The key path and message of a parse (serde) error.
fn parse_error(text: &str) -> (String, String) {
    match parse_str(text) {
        Err(PolicyError::Parse { path, message, .. }) => (path, message),
        Ok(_) => panic!("layout was accepted:\n{text}"),
        Err(other) => panic!("expected a parse error, got: {other}"),
    }
}

#[test]
fn base_layout_is_valid() {
    parse_str(&layout(&ai("cpus = { class = \"P\", count = 1 }", AI_MEM))).unwrap();
}

#[test]
fn overlapping_memory_across_partitions() {
    let mem = "[[partition.memory]]\nbase = 0x0800_0000\nsize = \"16MiB\"\ntype = \"ram\"\n";
    let e = only_error(&layout(&ai("apic_ids = [1]", mem)));
    let expected = E::MemoryOverlap {
        partition: "ai".into(),
        field: "memory[0]".into(),
        region: Span {
            base: 0x800_0000,
            size: 16 << 20,
        },
        other_partition: "primary".into(),
        other_field: "memory[0]".into(),
        other_region: Span {
            base: 0,
            size: 256 << 20,
        },
    };
    assert_eq!(e, expected);
    assert_eq!(
        e.to_string(),
        "partition \"ai\": memory[0] 0x800_0000+16MiB overlaps partition \"primary\" memory[0] 0x0+256MiB"
    );
}

#[test]
fn overlapping_memory_within_a_partition() {
    let mem = format!(
        "{AI_MEM}[[partition.memory]]\nbase = 0x1080_0000\nsize = \"4MiB\"\ntype = \"ram\"\n"
    );
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert!(
        matches!(&e, E::MemoryOverlap { partition, field, other_partition, other_field, .. }
            if partition == "ai" && field == "memory[1]" && other_partition == "ai" && other_field == "memory[0]"),
        "{e:?}"
    );
}

#[test]
fn cpu_given_twice() {
    let e = only_error(&layout(&ai("apic_ids = [0]", AI_MEM)));
    assert_eq!(
        e,
        E::CpuTwice {
            partition: "ai".into(),
            field: "apic_ids[0]".into(),
            apic_id: 0,
            other_partition: "primary".into(),
            other_field: "apic_ids[0]".into(),
        }
    );
    assert!(
        e.to_string()
            .contains("APIC ID 0 is already given to partition \"primary\""),
        "{e}"
    );
}

#[test]
fn more_cpus_of_a_class_than_the_machine_has() {
    // primary holds P-core APIC 0, so only one P-core is left.
    let e = only_error(&layout(&ai("cpus = { class = \"P\", count = 2 }", AI_MEM)));
    assert_eq!(
        e,
        E::TooManyCpus {
            partition: "ai".into(),
            field: "cpus[0].count".into(),
            class: CoreClass::P,
            requested: 3,
            available: 2,
        }
    );
}

#[test]
fn more_cpus_than_counted_on_a_hybrid_machine() {
    let text = r#"
[machine]
name = "hybrid"
memory = "1GiB"
cpu_counts = { P = 4, E = 8 }
[[partition]]
name = "primary"
role = "primary"
cpus = [{ class = "P", count = 2 }, { class = "E", count = 8 }]
memory_remainder = true
[[partition]]
name = "containers"
role = "containers"
cpus = { class = "E", count = 1 }
[[partition.memory]]
base = "512MiB"
size = "64MiB"
type = "ram"
"#;
    let e = only_error(text);
    assert!(
        matches!(&e, E::TooManyCpus { partition, field, class: CoreClass::E, requested: 9, available: 8 }
            if partition == "containers" && field == "cpus[0].count"),
        "{e:?}"
    );
}

#[test]
fn more_memory_than_the_machine_has() {
    let mem = "[[partition.memory]]\nbase = \"1GiB\"\nsize = \"1GiB\"\ntype = \"model-cache\"\n";
    let e = only_error(&layout(&ai("apic_ids = [1]", mem)));
    assert_eq!(
        e,
        E::TooMuchMemory {
            partition: "ai".into(),
            field: "memory[0]".into(),
            total: (1 << 30) + (256 << 20),
            machine: 1 << 30,
        }
    );
}

#[test]
fn vram_region_larger_than_the_card() {
    let text = layout(&format!(
        "{}\n[[vram]]\nname = \"weights\"\nsize = \"16GiB\"\nowner = \"ai\"\n",
        ai("apic_ids = [1]", AI_MEM)
    ));
    assert_eq!(
        only_error(&text),
        E::VramRegionTooLarge {
            region: "weights".into(),
            owner: "ai".into(),
            size: 16 << 30,
            card: 8 << 30
        }
    );
}

#[test]
fn vram_regions_sum_past_the_card() {
    let text = layout(&format!(
        "{}\n[[vram]]\nname = \"weights\"\nsize = \"6GiB\"\nowner = \"ai\"\n\
         [[vram]]\nname = \"frames\"\nsize = \"4GiB\"\nowner = \"primary\"\n",
        ai("apic_ids = [1]", AI_MEM)
    ));
    let e = only_error(&text);
    assert_eq!(
        e,
        E::VramExceedsCard {
            region: "frames".into(),
            owner: "primary".into(),
            total: 10 << 30,
            card: 8 << 30
        }
    );
    assert_eq!(e.partition(), Some("primary"));
}

#[test]
fn vram_owner_must_be_a_partition() {
    let text = layout("\n[[vram]]\nname = \"weights\"\nsize = \"1GiB\"\nowner = \"ia\"\n");
    assert_eq!(
        only_error(&text),
        E::UnknownVramOwner {
            region: "weights".into(),
            owner: "ia".into()
        }
    );
}

#[test]
fn unknown_role_is_a_parse_error_with_the_key_path() {
    let text = layout(&ai("apic_ids = [1]", AI_MEM)).replace("role = \"ai\"", "role = \"gamer\"");
    let (path, message) = parse_error(&text);
    assert_eq!(path, "partition[1].role");
    assert!(message.contains("unknown variant `gamer`"), "{message}");
    assert!(
        message.contains("`primary`, `ai`, `containers`, `test`"),
        "{message}"
    );
    assert!(
        message.contains("line "),
        "toml location missing: {message}"
    );
}

#[test]
fn unknown_group_is_a_parse_error_with_the_key_path() {
    let (path, message) = parse_error(&layout(&ai(
        "apic_ids = [1]\nabi_groups = [\"models\", \"gpus\"]",
        AI_MEM,
    )));
    assert_eq!(path, "partition[1].abi_groups[1]");
    assert!(message.contains("unknown group `gpus`"), "{message}");
}

#[test]
fn misspelt_key_is_a_parse_error() {
    let (path, message) = parse_error(&layout(&ai("apic_ids = [1]\nlow_latncy = true", AI_MEM)));
    assert_eq!(path, "partition[1].low_latncy");
    assert!(message.contains("unknown field `low_latncy`"), "{message}");
}

#[test]
fn unreadable_size_is_a_parse_error() {
    let mem = AI_MEM.replace("\"16MiB\"", "\"16MB\"");
    let (path, message) = parse_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert_eq!(path, "partition[1].memory[0].size");
    assert!(message.contains("\"16MB\""), "{message}");
}

#[test]
fn duplicate_partition_names() {
    let e = only_error(&layout(
        &ai("apic_ids = [1]", AI_MEM).replace("name = \"ai\"", "name = \"primary\""),
    ));
    assert_eq!(
        e,
        E::DuplicatePartition {
            name: "primary".into(),
            first: 0,
            second: 1
        }
    );
}

#[test]
fn zero_sized_region() {
    let mem = AI_MEM.replace("\"16MiB\"", "0");
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert_eq!(
        e,
        E::ZeroSize {
            partition: "ai".into(),
            field: "memory[0].size".into()
        }
    );
}

#[test]
fn misaligned_base_and_size() {
    let mem = AI_MEM.replace("0x1000_0000", "0x1000_0800");
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert_eq!(
        e,
        E::Misaligned {
            partition: "ai".into(),
            field: "memory[0].base".into(),
            value: 0x1000_0800
        }
    );

    let mem = AI_MEM.replace("\"16MiB\"", "0x1001");
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert_eq!(
        e,
        E::Misaligned {
            partition: "ai".into(),
            field: "memory[0].size".into(),
            value: 0x1001
        }
    );
    assert!(
        e.to_string()
            .contains("memory[0].size = 0x1001 is not a multiple of 4KiB"),
        "{e}"
    );
}

#[test]
fn region_past_the_physical_address_space() {
    let mem = AI_MEM.replace("0x1000_0000", "0xf_ffff_ffff_f000");
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert!(
        matches!(&e, E::BeyondAddressSpace { partition, field, .. } if partition == "ai" && field == "memory[0]"),
        "{e:?}"
    );
}

#[test]
fn missing_primary() {
    let text = format!("{MACHINE}{}", ai("apic_ids = [1]", AI_MEM));
    assert_eq!(only_error(&text), E::MissingPrimary);
}

#[test]
fn two_primaries() {
    let text = layout(&ai("apic_ids = [1]", AI_MEM).replace("role = \"ai\"", "role = \"primary\""));
    assert_eq!(
        only_error(&text),
        E::MultiplePrimary {
            first: "primary".into(),
            second: "ai".into()
        }
    );
}

#[test]
fn pci_device_assigned_twice() {
    let e = only_error(&layout(&ai("apic_ids = [1]\npci = [\"01:00.0\"]", AI_MEM)));
    assert_eq!(
        e,
        E::PciAssignedTwice {
            partition: "ai".into(),
            field: "pci[0]".into(),
            bdf: Bdf::new(0, 1, 0, 0),
            other_partition: "primary".into(),
        }
    );
}

#[test]
fn pci_device_not_on_the_machine() {
    let e = only_error(&layout(&ai("apic_ids = [1]\npci = [\"03:00.0\"]", AI_MEM)));
    assert_eq!(
        e,
        E::UnknownPciDevice {
            partition: "ai".into(),
            field: "pci[0]".into(),
            bdf: Bdf::new(0, 3, 0, 0)
        }
    );
}

#[test]
fn test_partition_without_image() {
    let text = layout(&ai("apic_ids = [1]", AI_MEM).replace("role = \"ai\"", "role = \"test\""));
    assert_eq!(
        only_error(&text),
        E::MissingImage {
            partition: "ai".into()
        }
    );
}

#[test]
fn image_name_that_is_not_a_file_name() {
    let e = only_error(&layout(&ai("apic_ids = [1]\nimage = \"../x\"", AI_MEM)));
    assert!(
        matches!(&e, E::BadImageName { partition, image, .. } if partition == "ai" && image == "../x"),
        "{e:?}"
    );
}

#[test]
fn cmdline_with_control_characters() {
    let e = only_error(&layout(&ai("apic_ids = [1]\ncmdline = \"a\\nb\"", AI_MEM)));
    assert!(
        matches!(&e, E::BadCmdline { partition, .. } if partition == "ai"),
        "{e:?}"
    );
}

#[test]
fn boot_is_for_the_primary_only() {
    let e = only_error(&layout(&ai(
        "apic_ids = [1]\nboot = '\\EFI\\x.efi'",
        AI_MEM,
    )));
    assert_eq!(
        e,
        E::BootNotPrimary {
            partition: "ai".into(),
            role: nexus_policy::Role::Ai
        }
    );
    assert_eq!(
        e.to_string(),
        "partition \"ai\": `boot` (the OS loader the hypervisor chain-loads) is only for the \
         primary partition, not role = \"ai\""
    );
}

#[test]
fn boot_path_that_is_not_an_absolute_backslash_path() {
    use nexus_policy::boot::BootPathError;
    for (path, reason) in [
        ("NEXUS\\VMLINUZ.EFI", BootPathError::NotAbsolute),
        (
            "\\NEXUS/VMLINUZ.EFI",
            BootPathError::ForwardSlash { offset: 6 },
        ),
        (
            "\\NEXUS\\..\\x.efi",
            BootPathError::DotComponent { offset: 7 },
        ),
        (
            "\\NEXUS\\\\x.efi",
            BootPathError::EmptyComponent { offset: 7 },
        ),
        ("", BootPathError::Empty),
    ] {
        let primary = PRIMARY.replace(
            "apic_ids = [0]",
            &format!("apic_ids = [0]\nboot = '{path}'"),
        );
        let text = format!("{MACHINE}{primary}{}", ai("apic_ids = [1]", AI_MEM));
        let e = only_error(&text);
        assert_eq!(
            e,
            E::BadBootPath {
                partition: "primary".into(),
                path: path.into(),
                reason
            }
        );
    }
    let primary = PRIMARY.replace("apic_ids = [0]", "apic_ids = [0]\nboot = '\\NEXUS'");
    let text = format!("{MACHINE}{primary}{}", ai("apic_ids = [1]", AI_MEM));
    parse_str(&text).unwrap();
    // Control characters, in a basic string.
    let primary = PRIMARY.replace("apic_ids = [0]", "apic_ids = [0]\nboot = \"\\\\a\\tb\"");
    let text = format!("{MACHINE}{primary}{}", ai("apic_ids = [1]", AI_MEM));
    assert_eq!(
        only_error(&text).to_string(),
        "partition \"primary\": boot \"\\\\a\\tb\" has a byte that is not printable ASCII at \
         offset 2"
    );
}

#[test]
fn primary_cmdline_may_reach_1024_bytes_others_255() {
    let with_cmdline = |n: usize| {
        PRIMARY.replace(
            "apic_ids = [0]",
            &format!("apic_ids = [0]\ncmdline = '{}'", "x".repeat(n)),
        )
    };
    let ai_part = ai("apic_ids = [1]", AI_MEM);
    parse_str(&format!("{MACHINE}{}{ai_part}", with_cmdline(1024))).unwrap();
    let e = only_error(&format!("{MACHINE}{}{ai_part}", with_cmdline(1025)));
    assert_eq!(
        e.to_string(),
        "partition \"primary\": cmdline is longer than 1024 bytes (the primary's limit)"
    );
    let ok = ai(
        &format!("apic_ids = [1]\ncmdline = '{}'", "y".repeat(255)),
        AI_MEM,
    );
    parse_str(&layout(&ok)).unwrap();
    let long = ai(
        &format!("apic_ids = [1]\ncmdline = '{}'", "y".repeat(256)),
        AI_MEM,
    );
    assert_eq!(
        only_error(&layout(&long)).to_string(),
        "partition \"ai\": cmdline is longer than 255 bytes (only the primary's may reach 1024)"
    );
}

#[test]
fn unknown_apic_id() {
    let e = only_error(&layout(&ai("apic_ids = [7]", AI_MEM)));
    assert_eq!(
        e,
        E::UnknownApicId {
            partition: "ai".into(),
            field: "apic_ids[0]".into(),
            apic_id: 7
        }
    );
}

#[test]
fn partition_without_cpus_and_with_both_kinds() {
    assert_eq!(
        only_error(&layout(&ai("", AI_MEM))),
        E::NoCpus {
            partition: "ai".into()
        }
    );
    let e = only_error(&layout(&ai(
        "apic_ids = [1]\ncpus = { class = \"E\", count = 1 }",
        AI_MEM,
    )));
    assert_eq!(
        e,
        E::CpusAndApicIds {
            partition: "ai".into()
        }
    );
}

#[test]
fn remainder_is_for_the_primary_only() {
    let e = only_error(&layout(&ai("apic_ids = [1]\nmemory_remainder = true", "")));
    assert_eq!(
        e,
        E::RemainderNotPrimary {
            partition: "ai".into()
        }
    );
}

#[test]
fn shared_region_must_name_other_partitions() {
    let mem = AI_MEM.replace("\"model-cache\"", "\"shared\"\nshared_with = [\"primry\"]");
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert_eq!(
        e,
        E::SharedWithUnknown {
            partition: "ai".into(),
            field: "memory[0]".into(),
            name: "primry".into()
        }
    );
    let mem = AI_MEM.replace("\"model-cache\"", "\"ram\"\nshared_with = [\"primary\"]");
    let e = only_error(&layout(&ai("apic_ids = [1]", &mem)));
    assert_eq!(
        e,
        E::SharedWithNotShared {
            partition: "ai".into(),
            field: "memory[0]".into()
        }
    );
}

#[test]
fn several_errors_are_all_reported() {
    let mem = AI_MEM.replace("\"16MiB\"", "0");
    let text = layout(&ai("apic_ids = [0]", &mem).replace("role = \"ai\"", "role = \"test\""));
    let err = parse_str(&text).unwrap_err();
    let errors = err.validation_errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors.iter().any(|e| matches!(e, E::CpuTwice { .. })));
    assert!(errors.iter().any(|e| matches!(e, E::ZeroSize { .. })));
    assert!(errors.iter().any(|e| matches!(e, E::MissingImage { .. })));
    assert!(
        err.to_string().starts_with("3 policy errors:\n  - "),
        "{err}"
    );
}

/// The base layout with `[machine] hypervisor_memory = <hv>` (the AI partition at 0x1000_0000).
fn with_hv_memory(hv: &str) -> String {
    let machine = MACHINE.replace(
        "memory = \"1GiB\"\n",
        &format!("memory = \"1GiB\"\nhypervisor_memory = {hv}\n"),
    );
    format!(
        "{machine}{PRIMARY}{}",
        ai("cpus = { class = \"P\", count = 1 }", AI_MEM)
    )
}

#[test]
fn hypervisor_memory_clear_of_partitions_is_valid() {
    let p = parse_str(&with_hv_memory("{ base = 0x2000_0000, size = \"32MiB\" }")).unwrap();
    let hv = p
        .machine
        .hypervisor_memory
        .expect("hypervisor_memory parsed");
    assert_eq!((hv.base, hv.size), (0x2000_0000, 32 << 20));
}

#[test]
fn hypervisor_memory_of_zero_size() {
    let e = only_error(&with_hv_memory("{ base = 0x2000_0000, size = 0 }"));
    assert_eq!(
        e,
        E::MachineZero {
            field: "hypervisor_memory.size"
        }
    );
    assert_eq!(
        e.to_string(),
        "machine: hypervisor_memory.size must not be zero"
    );
}

#[test]
fn hypervisor_memory_not_2mib_aligned() {
    let e = only_error(&with_hv_memory("{ base = 0x2010_0000, size = \"32MiB\" }"));
    assert_eq!(
        e,
        E::HypervisorMemoryMisaligned {
            field: "base",
            value: 0x2010_0000
        }
    );
    assert_eq!(
        e.to_string(),
        "machine: hypervisor_memory.base = 0x2010_0000 is not a multiple of 2MiB"
    );
    let e = only_error(&with_hv_memory("{ base = 0x2000_0000, size = \"3MiB\" }"));
    assert_eq!(
        e,
        E::HypervisorMemoryMisaligned {
            field: "size",
            value: 3 << 20
        }
    );
}

#[test]
fn hypervisor_memory_beyond_the_address_space() {
    let e = only_error(&with_hv_memory(
        "{ base = 0xf_ffff_ffe0_0000, size = \"4MiB\" }",
    ));
    assert_eq!(
        e,
        E::HypervisorMemoryBeyondAddressSpace {
            region: Span {
                base: 0xf_ffff_ffe0_0000,
                size: 4 << 20
            }
        }
    );
    assert!(e.to_string().contains("beyond the 52-bit"), "{e}");
}

#[test]
fn hypervisor_memory_overlapping_a_partition() {
    // Covers the end of the primary's 256 MiB and nothing of the AI partition.
    let e = only_error(&with_hv_memory("{ base = 0x0fe0_0000, size = \"2MiB\" }"));
    assert_eq!(
        e,
        E::HypervisorMemoryOverlap {
            region: Span {
                base: 0x0fe0_0000,
                size: 2 << 20
            },
            partition: "primary".into(),
            field: "memory[0]".into(),
            other_region: Span {
                base: 0,
                size: 256 << 20
            },
        }
    );
    assert_eq!(
        e.to_string(),
        "machine: hypervisor_memory 0xfe0_0000+2MiB overlaps partition \"primary\" memory[0] 0x0+256MiB"
    );
    assert_eq!(e.partition(), Some("primary"));
}

#[test]
fn hypervisor_memory_with_an_unknown_key() {
    let (path, message) = parse_error(&with_hv_memory(
        "{ base = 0x2000_0000, size = \"32MiB\", sise = 1 }",
    ));
    assert_eq!(path, "machine.hypervisor_memory.sise");
    assert!(message.contains("unknown field `sise`"), "{message}");
}
