//! The layouts shipped in policies/ load, validate and say what they promise.

use nexus_policy::{load_file, CoreClass, Group, MemoryType, Policy, Role};

fn shipped(name: &str) -> Policy {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    load_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn i9_layout_keeps_the_original_split() {
    let p = shipped("i9-13900hx-rtx4080.toml");
    assert_eq!(p.machine.memory, 64 * GIB);
    let counts = p.machine.cpu_counts.expect("counts per class");
    assert_eq!((counts.p, counts.e), (16, 16));

    let mem = |name: &str, kind: MemoryType| -> u64 {
        p.partition(name)
            .unwrap()
            .memory
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.size)
            .sum()
    };
    // 4 GiB system RAM (gaming + containers) and 60 GiB AI model cache.
    assert_eq!(
        mem("primary", MemoryType::Ram) + mem("containers", MemoryType::Ram),
        4 * GIB
    );
    assert_eq!(mem("ai", MemoryType::ModelCache), 60 * GIB);
    assert_eq!(mem("ai", MemoryType::Ram), 0);

    // VRAM: 8 model storage + 4 inference cache (AI), 4 gaming/RT (primary).
    let vram: Vec<(&str, u64, &str)> = p
        .vram
        .iter()
        .map(|r| (r.name.as_str(), r.size, r.owner.as_str()))
        .collect();
    assert_eq!(
        vram,
        [
            ("model-storage", 8 * GIB, "ai"),
            ("inference-cache", 4 * GIB, "ai"),
            ("gaming-rt", 4 * GIB, "primary")
        ]
    );
    assert_eq!(p.machine.gpu.as_ref().unwrap().vram, 16 * GIB);

    // AI on P-cores only, containers on E-cores only, gaming low-latency with P-cores.
    let classes = |name: &str| -> Vec<CoreClass> {
        p.partition(name)
            .unwrap()
            .cpus
            .iter()
            .map(|c| c.class)
            .collect()
    };
    assert_eq!(classes("ai"), [CoreClass::P]);
    assert_eq!(classes("containers"), [CoreClass::E]);
    let primary = p.partition("primary").unwrap();
    assert_eq!(p.primary(), Some(primary));
    assert_eq!(primary.boot.as_deref(), Some("\\EFI\\Garuda\\grubx64.efi"));
    assert_eq!(primary.role, Role::Primary);
    assert!(primary.low_latency);
    assert!(primary.cpus.iter().any(|c| c.class == CoreClass::P));
    assert!(!p.partition("ai").unwrap().low_latency);
    assert!(p.partition("ai").unwrap().abi_groups.contains(Group::Gpu));
}

#[test]
fn qemu_dev_has_the_test_partitions_the_e2e_tests_boot() {
    let p = shipped("qemu-dev.toml");
    assert_eq!(p.machine.memory, 2 * GIB);
    assert_eq!(
        p.machine.cpus.iter().map(|c| c.apic_id).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let primary = p.partition("primary").unwrap();
    assert_eq!(primary.boot.as_deref(), Some("\\NEXUS\\VMLINUZ.EFI"));
    assert_eq!(primary.apic_ids, [0, 1]);
    assert!(primary.memory_remainder);

    let hc = p.partition("hypercalls").unwrap();
    assert_eq!((hc.role, hc.apic_ids.as_slice()), (Role::Test, &[2][..]));
    assert_eq!(hc.image.as_deref(), Some("test-guest"));
    assert_eq!(hc.cmdline.as_deref(), Some("hypercalls"));
    // Every group with calls: the console and the four AI groups (no management call
    // exists yet, and test partitions get none).
    assert!(Group::ALL
        .iter()
        .filter(|g| **g != Group::Management)
        .all(|g| hc.abi_groups.contains(*g)));
    assert!(!hc.abi_groups.contains(Group::Management));

    let iso = p.partition("isolation").unwrap();
    assert_eq!(iso.apic_ids, [3]);
    assert_eq!(iso.cmdline.as_deref(), Some("isolation"));
    for t in [hc, iso] {
        assert_eq!(t.memory.len(), 1);
        assert_eq!(t.memory[0].size, 16 * MIB);
        assert!(
            t.memory[0].end().unwrap() <= 2 * GIB,
            "{} must lie in RAM",
            t.name
        );
    }
}

#[test]
fn qemu_fail_has_one_failing_test_partition() {
    let p = shipped("qemu-fail.toml");
    let tests: Vec<_> = p
        .partitions
        .iter()
        .filter(|x| x.role == Role::Test)
        .collect();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].cmdline.as_deref(), Some("fail"));
    assert_eq!(tests[0].image.as_deref(), Some("test-guest"));
}

#[test]
fn table_shows_partitions_cores_memory_vram_groups_and_image() {
    let table = shipped("i9-13900hx-rtx4080.toml").table();
    for needle in [
        "primary",
        "ai",
        "containers",
        "P x8",
        "E x12",
        "low latency",
        "0x1_0000_0000+60GiB model-cache",
        "model-storage 8GiB",
        "gaming-rt 4GiB",
        "models,gpu,tensors",
        "01:00.0",
        "P cpus 16/16",
        "vram 16GiB of 16GiB",
        "boot \\EFI\\Garuda\\grubx64.efi",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    let table = shipped("qemu-dev.toml").table();
    for needle in [
        "hypercalls",
        "test-guest",
        "\"isolation\"",
        "0x4000_0000+16MiB ram",
        "hv     0x4200_0000+32MiB (hypervisor memory",
        // 2 GiB minus three 16 MiB test regions and the hypervisor's 32 MiB.
        "remainder (~1968MiB of RAM)",
        "APIC 2",
        "remainder",
        "boot \\NEXUS\\VMLINUZ.EFI",
        "\"initrd=\\NEXUS\\INITRD.IMG console=ttyS0 panic=-1\"",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
}

#[test]
fn load_file_errors_name_the_file() {
    let missing = load_file("/nonexistent/policy.toml").unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/policy.toml: cannot read policy"),
        "{missing}"
    );

    let dir = std::env::temp_dir().join(format!("nexus-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.toml");
    std::fs::write(
        &file,
        "[machine]\nname = \"x\"\nmemory = \"2GiB\"\ncpu_counts = { P = 1 }\n",
    )
    .unwrap();
    let err = load_file(&file).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}: ", file.display())), "{text}");
    assert!(text.contains("primary"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_shipped_layout_loads_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml") && n != "Cargo.toml")
        .collect();
    names.sort();
    assert!(names.len() >= 20, "policies/ lost its layouts: {names:?}");
    for name in &names {
        let p = shipped(name);
        assert!(!p.partitions.is_empty(), "{name}: no partitions");
    }
}
