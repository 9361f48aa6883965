//! The human-readable layout table printed by `cargo xtask policy check`.

use std::fmt::Write as _;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::error::Span;
use crate::groups::GroupNames;
use crate::schema::{Partition, Policy};
use crate::types::CoreClass;
use crate::units::Size;

/// Renders the machine summary, one block per partition and the VRAM split.
pub fn render(policy: &Policy) -> String {
    let mut out = String::new();
    let m = &policy.machine;
    let _ = writeln!(out, "machine  {}", m.name);
    let cpus = match &m.cpu_counts {
        Some(c) if m.cpus.is_empty() => {
            format!(
                "{} P + {} E logical CPUs (APIC IDs from CPUID leaf 0x1A at boot)",
                c.p, c.e
            )
        }
        _ => {
            let ids = |class| {
                m.cpus
                    .iter()
                    .filter(|c| c.class == class)
                    .map(|c| c.apic_id.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let (p, e) = (ids(CoreClass::P), ids(CoreClass::E));
            match (p.is_empty(), e.is_empty()) {
                (false, true) => format!("APIC {p} (P)"),
                (true, false) => format!("APIC {e} (E)"),
                _ => format!("APIC {p} (P), {e} (E)"),
            }
        }
    };
    let _ = writeln!(out, "  cpus   {cpus}");
    let _ = writeln!(out, "  memory {}", Size(m.memory));
    if let Some(hv) = &m.hypervisor_memory {
        let span = Span {
            base: hv.base,
            size: hv.size,
        };
        let _ = writeln!(
            out,
            "  hv     {span} (hypervisor memory, hidden from every partition)"
        );
    }
    if let Some(gpu) = &m.gpu {
        let bdf = gpu.bdf.map(|b| format!(" at {b}")).unwrap_or_default();
        let _ = writeln!(out, "  gpu    {}{bdf}, {} VRAM", gpu.name, Size(gpu.vram));
    }
    if !m.pci.is_empty() {
        let devices: Vec<String> = m
            .pci
            .iter()
            .map(|d| match &d.name {
                Some(name) => format!("{} {name}", d.bdf),
                None => d.bdf.to_string(),
            })
            .collect();
        let _ = writeln!(out, "  pci    {}", devices.join("; "));
    }
    out.push('\n');

    let header = [
        "PARTITION",
        "ROLE",
        "CPUS",
        "MEMORY",
        "VRAM",
        "PCI",
        "ABI GROUPS",
        "IMAGE",
        "CMDLINE",
    ];
    let rows: Vec<Vec<Vec<String>>> = policy.partitions.iter().map(|p| row(policy, p)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = cell.iter().map(|l| l.len()).fold(*w, usize::max);
        }
    }
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &rows {
        let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for i in 0..height {
            let cells: Vec<&str> = row
                .iter()
                .map(|c| c.get(i).map(String::as_str).unwrap_or(""))
                .collect();
            line(&mut out, &cells);
        }
    }

    if !policy.vram.is_empty() {
        out.push('\n');
        let card = m
            .gpu
            .as_ref()
            .map(|g| Size(g.vram).to_string())
            .unwrap_or_else(|| "no GPU".into());
        let _ = writeln!(out, "vram ({card})");
        let name_w = policy.vram.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in &policy.vram {
            let _ = writeln!(
                out,
                "  {:<name_w$}  {:>7}  -> {}",
                r.name,
                Size(r.size),
                r.owner
            );
        }
    }

    out.push('\n');
    let _ = writeln!(out, "totals   {}", totals(policy));
    out
}

fn row(policy: &Policy, p: &Partition) -> Vec<Vec<String>> {
    let mut cpus: Vec<String> = p
        .cpus
        .iter()
        .map(|c| format!("{} x{}", c.class, c.count))
        .collect();
    if !p.apic_ids.is_empty() {
        let ids: Vec<String> = p.apic_ids.iter().map(u32::to_string).collect();
        cpus.push(format!("APIC {}", ids.join(",")));
    }
    if p.low_latency {
        cpus.push("(low latency)".into());
    }
    if p.share_smt_core {
        cpus.push("(shares SMT cores)".into());
    }
    let mut memory: Vec<String> = p
        .memory
        .iter()
        .map(|r| {
            let mut text = format!(
                "{} {}",
                Span {
                    base: r.base,
                    size: r.size
                },
                r.kind
            );
            if !r.shared_with.is_empty() {
                let _ = write!(text, " with {}", r.shared_with.join(","));
            }
            text
        })
        .collect();
    if p.memory_remainder {
        let claimed: u64 = policy
            .partitions
            .iter()
            .flat_map(|q| &q.memory)
            .map(|r| r.size)
            .sum::<u64>()
            .saturating_add(policy.machine.hypervisor_memory.map_or(0, |h| h.size));
        memory.push(format!(
            "remainder (~{} of RAM)",
            Size(policy.machine.memory.saturating_sub(claimed))
        ));
    }
    let vram: Vec<String> = policy
        .vram
        .iter()
        .filter(|r| r.owner == p.name)
        .map(|r| format!("{} {}", r.name, Size(r.size)))
        .collect();
    let pci: Vec<String> = p.pci.iter().map(|b| b.to_string()).collect();
    let or_dash = |v: Vec<String>| {
        if v.is_empty() {
            vec!["-".to_string()]
        } else {
            v
        }
    };
    vec![
        vec![p.name.clone()],
        vec![p.role.to_string()],
        or_dash(cpus),
        or_dash(memory),
        or_dash(vram),
        or_dash(pci),
        vec![GroupNames(p.abi_groups).to_string()],
        match (&p.image, &p.boot) {
            (None, None) => vec!["-".into()],
            (image, boot) => image
                .iter()
                .cloned()
                .chain(boot.iter().map(|b| format!("boot {b}")))
                .collect(),
        },
        vec![p
            .cmdline
            .as_ref()
            // Quoted as written; escaped only when it holds what validation refuses.
            .map(|c| {
                if c.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    format!("\"{c}\"")
                } else {
                    format!("{c:?}")
                }
            })
            .unwrap_or_else(|| "-".into())],
    ]
}

fn totals(policy: &Policy) -> String {
    let m = &policy.machine;
    let mut parts = Vec::new();
    for class in CoreClass::ALL {
        let have = match &m.cpu_counts {
            Some(c) if m.cpus.is_empty() => c.get(class),
            _ => m.cpus.iter().filter(|c| c.class == class).count() as u32,
        };
        let explicit: u32 = policy
            .partitions
            .iter()
            .flat_map(|p| &p.apic_ids)
            .filter(|id| m.cpus.iter().any(|c| c.apic_id == **id && c.class == class))
            .count() as u32;
        let by_class: u32 = policy
            .partitions
            .iter()
            .flat_map(|p| &p.cpus)
            .filter(|c| c.class == class)
            .map(|c| c.count)
            .sum();
        if have > 0 {
            parts.push(format!("{class} cpus {}/{have}", explicit + by_class));
        }
    }
    let claimed: u64 = policy
        .partitions
        .iter()
        .flat_map(|p| &p.memory)
        .map(|r| r.size)
        .sum();
    parts.push(format!(
        "memory {} of {} in explicit regions",
        Size(claimed),
        Size(m.memory)
    ));
    if let Some(gpu) = &m.gpu {
        let used: u64 = policy.vram.iter().map(|r| r.size).sum();
        parts.push(format!("vram {} of {}", Size(used), Size(gpu.vram)));
    }
    parts.join("; ")
}
