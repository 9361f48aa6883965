//! Validation: every rule a policy must satisfy before it is compiled. All
//! broken rules are collected so the user sees them at once.

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::boot::check_boot_path;
use crate::error::{Span, ValidationError as E};
use crate::limits::{
    HV_MEMORY_ALIGN, MAX_CMDLINE_LEN, MAX_IMAGE_LEN, MAX_NAME_LEN, MAX_PARTITIONS,
    MAX_PRIMARY_CMDLINE_LEN, PAGE_SIZE, PHYS_ADDR_LIMIT,
};
use crate::schema::{Partition, Policy};
use crate::types::{Bdf, CoreClass, MemoryType, Role};

/// Checks `policy`; `Err` lists every broken rule in file order.
pub fn validate(policy: &Policy) -> Result<(), Vec<E>> {
    let mut errors = Vec::new();
    machine(policy, &mut errors);
    partitions(policy, &mut errors);
    cpus(policy, &mut errors);
    memory(policy, &mut errors);
    hypervisor_memory(policy, &mut errors);
    vram(policy, &mut errors);
    pci(policy, &mut errors);
    images(policy, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn machine(policy: &Policy, errors: &mut Vec<E>) {
    let m = &policy.machine;
    match (m.cpus.is_empty(), &m.cpu_counts) {
        (true, None) => errors.push(E::MachineCpuSource { both: false }),
        (false, Some(_)) => errors.push(E::MachineCpuSource { both: true }),
        (true, Some(c)) if c.p == 0 && c.e == 0 => errors.push(E::MachineZero {
            field: "cpu_counts",
        }),
        _ => {}
    }
    if m.memory == 0 {
        errors.push(E::MachineZero { field: "memory" });
    }
    if m.gpu.as_ref().is_some_and(|g| g.vram == 0) {
        errors.push(E::MachineZero { field: "gpu.vram" });
    }
    let mut seen = BTreeMap::new();
    for (i, cpu) in m.cpus.iter().enumerate() {
        if seen.insert(cpu.apic_id, i).is_some() {
            errors.push(E::MachineCpuTwice {
                field: format!("cpus[{i}]"),
                apic_id: cpu.apic_id,
            });
        }
    }
    let mut seen = BTreeMap::new();
    for (i, dev) in m.pci.iter().enumerate() {
        if seen.insert(dev.bdf, i).is_some() {
            errors.push(E::MachinePciTwice {
                field: format!("pci[{i}]"),
                bdf: dev.bdf,
            });
        }
    }
}

fn partitions(policy: &Policy, errors: &mut Vec<E>) {
    if policy.partitions.len() > MAX_PARTITIONS {
        errors.push(E::TooManyPartitions {
            count: policy.partitions.len(),
            max: MAX_PARTITIONS,
        });
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut primary: Option<&str> = None;
    for (i, p) in policy.partitions.iter().enumerate() {
        if let Some(reason) = bad_name(&p.name) {
            errors.push(E::BadPartitionName {
                index: i,
                name: p.name.clone(),
                reason,
            });
        }
        if let Some(&first) = names.get(p.name.as_str()) {
            errors.push(E::DuplicatePartition {
                name: p.name.clone(),
                first,
                second: i,
            });
        } else {
            names.insert(&p.name, i);
        }
        if p.role == Role::Primary {
            match primary {
                Some(first) => errors.push(E::MultiplePrimary {
                    first: first.to_string(),
                    second: p.name.clone(),
                }),
                None => primary = Some(&p.name),
            }
        }
    }
    if primary.is_none() {
        errors.push(E::MissingPrimary);
    }
}

fn bad_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some("must be 1 to 32 characters");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Some("must start with a lowercase letter");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Some("may only hold lowercase letters, digits, '-' and '_'");
    }
    None
}

fn cpus(policy: &Policy, errors: &mut Vec<E>) {
    let m = &policy.machine;
    // Available logical CPUs per class, and the class of each listed APIC ID.
    let classes: BTreeMap<u32, CoreClass> = m.cpus.iter().map(|c| (c.apic_id, c.class)).collect();
    let available = |class: CoreClass| -> u32 {
        match &m.cpu_counts {
            Some(counts) if m.cpus.is_empty() => counts.get(class),
            _ => m.cpus.iter().filter(|c| c.class == class).count() as u32,
        }
    };
    let mut used: BTreeMap<CoreClass, u32> = BTreeMap::new();
    let mut owner: BTreeMap<u32, (&str, String)> = BTreeMap::new();
    let mut count_one =
        |p: &Partition, field: String, class: CoreClass, n: u32, errors: &mut Vec<E>| {
            let total = used.entry(class).or_insert(0);
            let before = *total;
            *total = total.saturating_add(n);
            let have = available(class);
            // Report only the request that first crosses the limit.
            if *total > have && before <= have {
                errors.push(E::TooManyCpus {
                    partition: p.name.clone(),
                    field,
                    class,
                    requested: *total,
                    available: have,
                });
            }
        };
    for p in &policy.partitions {
        match (p.cpus.is_empty(), p.apic_ids.is_empty()) {
            (true, true) => errors.push(E::NoCpus {
                partition: p.name.clone(),
            }),
            (false, false) => errors.push(E::CpusAndApicIds {
                partition: p.name.clone(),
            }),
            _ => {}
        }
        for (i, apic_id) in p.apic_ids.iter().copied().enumerate() {
            let field = format!("apic_ids[{i}]");
            if m.cpus.is_empty() {
                errors.push(E::ApicIdsOnCountMachine {
                    partition: p.name.clone(),
                    field,
                });
                continue;
            }
            let Some(&class) = classes.get(&apic_id) else {
                errors.push(E::UnknownApicId {
                    partition: p.name.clone(),
                    field,
                    apic_id,
                });
                continue;
            };
            if let Some((other, other_field)) = owner.get(&apic_id) {
                errors.push(E::CpuTwice {
                    partition: p.name.clone(),
                    field,
                    apic_id,
                    other_partition: other.to_string(),
                    other_field: other_field.clone(),
                });
                continue;
            }
            owner.insert(apic_id, (&p.name, field.clone()));
            count_one(p, field, class, 1, errors);
        }
        for (i, req) in p.cpus.iter().enumerate() {
            let field = format!("cpus[{i}].count");
            if req.count == 0 {
                errors.push(E::ZeroCount {
                    partition: p.name.clone(),
                    field,
                });
                continue;
            }
            count_one(p, field, req.class, req.count, errors);
        }
    }
}

/// `[machine] hypervisor_memory`: non-zero, 2 MiB aligned, inside the physical address
/// space, and clear of every partition region (the hypervisor claims it before any
/// partition starts, and the primary's tables leave it out).
fn hypervisor_memory(policy: &Policy, errors: &mut Vec<E>) {
    let Some(hv) = policy.machine.hypervisor_memory else {
        return;
    };
    let mut ok = true;
    if hv.size == 0 {
        errors.push(E::MachineZero {
            field: "hypervisor_memory.size",
        });
        ok = false;
    }
    for (field, value) in [("base", hv.base), ("size", hv.size)] {
        if value % HV_MEMORY_ALIGN != 0 {
            errors.push(E::HypervisorMemoryMisaligned { field, value });
            ok = false;
        }
    }
    let region = Span {
        base: hv.base,
        size: hv.size,
    };
    let end = match hv.end() {
        Some(end) if end <= PHYS_ADDR_LIMIT => end,
        _ => {
            errors.push(E::HypervisorMemoryBeyondAddressSpace { region });
            return;
        }
    };
    if !ok {
        return;
    }
    for p in &policy.partitions {
        for (i, r) in p.memory.iter().enumerate() {
            let overlaps = r.end().is_some_and(|r_end| r.base < end && hv.base < r_end);
            if overlaps {
                errors.push(E::HypervisorMemoryOverlap {
                    region,
                    partition: p.name.clone(),
                    field: format!("memory[{i}]"),
                    other_region: Span {
                        base: r.base,
                        size: r.size,
                    },
                });
            }
        }
    }
}

/// One memory region with where it came from, for overlap reports.
struct Placed<'a> {
    partition: &'a str,
    field: String,
    base: u64,
    end: u64,
    size: u64,
}

fn memory(policy: &Policy, errors: &mut Vec<E>) {
    let names: Vec<&str> = policy.partitions.iter().map(|p| p.name.as_str()).collect();
    let mut placed: Vec<Placed> = Vec::new();
    let mut total: u64 = 0;
    let mut over = false;
    for p in &policy.partitions {
        let name = || p.name.clone();
        if p.memory_remainder {
            if p.role != Role::Primary {
                errors.push(E::RemainderNotPrimary { partition: name() });
            }
            if !p.memory.is_empty() {
                errors.push(E::RemainderWithRegions { partition: name() });
            }
        } else if p.memory.is_empty() {
            errors.push(E::NoMemory { partition: name() });
        }
        for (i, r) in p.memory.iter().enumerate() {
            let field = format!("memory[{i}]");
            let mut ok = true;
            if r.size == 0 {
                errors.push(E::ZeroSize {
                    partition: name(),
                    field: format!("{field}.size"),
                });
                ok = false;
            }
            for (what, value) in [("base", r.base), ("size", r.size)] {
                if value % PAGE_SIZE != 0 {
                    errors.push(E::Misaligned {
                        partition: name(),
                        field: format!("{field}.{what}"),
                        value,
                    });
                    ok = false;
                }
            }
            match r.end() {
                Some(end) if end <= PHYS_ADDR_LIMIT => {
                    if ok {
                        placed.push(Placed {
                            partition: &p.name,
                            field: field.clone(),
                            base: r.base,
                            end,
                            size: r.size,
                        });
                    }
                }
                _ => {
                    errors.push(E::BeyondAddressSpace {
                        partition: name(),
                        field: field.clone(),
                        region: Span {
                            base: r.base,
                            size: r.size,
                        },
                    });
                }
            }
            total = total.saturating_add(r.size);
            if total > policy.machine.memory && !over {
                over = true;
                errors.push(E::TooMuchMemory {
                    partition: name(),
                    field: field.clone(),
                    total,
                    machine: policy.machine.memory,
                });
            }
            match (r.kind == MemoryType::Shared, r.shared_with.is_empty()) {
                (false, false) => errors.push(E::SharedWithNotShared {
                    partition: name(),
                    field: field.clone(),
                }),
                (true, true) => errors.push(E::SharedWithoutPartners {
                    partition: name(),
                    field: field.clone(),
                }),
                _ => {}
            }
            for other in &r.shared_with {
                if *other == p.name || !names.contains(&other.as_str()) {
                    errors.push(E::SharedWithUnknown {
                        partition: name(),
                        field: field.clone(),
                        name: other.clone(),
                    });
                }
            }
        }
    }
    // Every pair once, reported at the later region so the message reads
    // "X overlaps <earlier region>".
    for (j, b) in placed.iter().enumerate() {
        for a in &placed[..j] {
            if a.base < b.end && b.base < a.end {
                errors.push(E::MemoryOverlap {
                    partition: b.partition.to_string(),
                    field: b.field.clone(),
                    region: Span {
                        base: b.base,
                        size: b.size,
                    },
                    other_partition: a.partition.to_string(),
                    other_field: a.field.clone(),
                    other_region: Span {
                        base: a.base,
                        size: a.size,
                    },
                });
            }
        }
    }
}

fn vram(policy: &Policy, errors: &mut Vec<E>) {
    let card = policy.machine.gpu.as_ref().map(|g| g.vram);
    let mut total: u64 = 0;
    let mut over = false;
    let mut seen: Vec<&str> = Vec::new();
    for r in &policy.vram {
        let (region, owner) = (r.name.clone(), r.owner.clone());
        if seen.contains(&r.name.as_str()) {
            errors.push(E::DuplicateVramName {
                region: region.clone(),
            });
        }
        seen.push(&r.name);
        if !policy.partitions.iter().any(|p| p.name == r.owner) {
            errors.push(E::UnknownVramOwner {
                region: region.clone(),
                owner: owner.clone(),
            });
        }
        if r.size == 0 {
            errors.push(E::VramZeroSize {
                region: region.clone(),
                owner: owner.clone(),
            });
        }
        let Some(card) = card else {
            errors.push(E::VramWithoutGpu { region });
            continue;
        };
        if r.size > card {
            errors.push(E::VramRegionTooLarge {
                region,
                owner,
                size: r.size,
                card,
            });
            over = true; // the sum error would only repeat this one
            continue;
        }
        total = total.saturating_add(r.size);
        if total > card && !over {
            over = true;
            errors.push(E::VramExceedsCard {
                region,
                owner,
                total,
                card,
            });
        }
    }
}

fn pci(policy: &Policy, errors: &mut Vec<E>) {
    let m = &policy.machine;
    let listed = |bdf: &Bdf| {
        m.pci.iter().any(|d| d.bdf == *bdf) || m.gpu.as_ref().and_then(|g| g.bdf) == Some(*bdf)
    };
    let mut owner: BTreeMap<Bdf, &str> = BTreeMap::new();
    for p in &policy.partitions {
        for (i, bdf) in p.pci.iter().enumerate() {
            let field = format!("pci[{i}]");
            if !m.pci.is_empty() && !listed(bdf) {
                errors.push(E::UnknownPciDevice {
                    partition: p.name.clone(),
                    field: field.clone(),
                    bdf: *bdf,
                });
            }
            if let Some(other) = owner.get(bdf) {
                errors.push(E::PciAssignedTwice {
                    partition: p.name.clone(),
                    field,
                    bdf: *bdf,
                    other_partition: other.to_string(),
                });
            } else {
                owner.insert(*bdf, &p.name);
            }
        }
    }
}

fn images(policy: &Policy, errors: &mut Vec<E>) {
    for p in &policy.partitions {
        match &p.image {
            None if p.role == Role::Test => errors.push(E::MissingImage {
                partition: p.name.clone(),
            }),
            None => {}
            Some(image) => {
                let reason = if image.is_empty() || image.len() > MAX_IMAGE_LEN {
                    Some("must be 1 to 32 characters")
                } else if !image
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    Some("may only hold letters, digits, '-' and '_' (it names NEXUS/<IMAGE>.ELF)")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    errors.push(E::BadImageName {
                        partition: p.name.clone(),
                        image: image.clone(),
                        reason,
                    });
                }
            }
        }
        if let Some(cmdline) = &p.cmdline {
            let primary = p.role == Role::Primary;
            if primary && cmdline.len() > MAX_PRIMARY_CMDLINE_LEN {
                errors.push(E::BadCmdline {
                    partition: p.name.clone(),
                    reason: "is longer than 1024 bytes (the primary's limit)",
                });
            } else if !primary && cmdline.len() > MAX_CMDLINE_LEN {
                errors.push(E::BadCmdline {
                    partition: p.name.clone(),
                    reason: "is longer than 255 bytes (only the primary's may reach 1024)",
                });
            } else if !cmdline.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                errors.push(E::BadCmdline {
                    partition: p.name.clone(),
                    reason: "may only hold printable ASCII (no control characters)",
                });
            }
        }
        if let Some(path) = &p.boot {
            if p.role != Role::Primary {
                errors.push(E::BootNotPrimary {
                    partition: p.name.clone(),
                    role: p.role,
                });
            } else if let Err(reason) = check_boot_path(path) {
                errors.push(E::BadBootPath {
                    partition: p.name.clone(),
                    path: path.clone(),
                    reason,
                });
            }
        }
    }
}
