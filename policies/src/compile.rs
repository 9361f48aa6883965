//! Policy -> compiled binary form, and back (for round-trip checks and tools).

use std::string::{String, ToString};
use std::vec::Vec;

use crate::compiled::format::*;
use crate::compiled::{checksum, CompiledPolicy, CpuEntry};
use crate::schema::{
    CpuCounts, CpuRequest, Gpu, HypervisorMemory, Machine, MachineCpu, MemoryRegion, Partition,
    PciDevice, Policy, VramRegion,
};

/// Appends strings and hands out `(offset, len)` references.
#[derive(Default)]
struct Strings(Vec<u8>);

impl Strings {
    fn put(&mut self, rec: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                rec.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
                rec.extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.0.extend_from_slice(s.as_bytes());
            }
            None => {
                rec.extend_from_slice(&STR_ABSENT.to_le_bytes());
                rec.extend_from_slice(&0u32.to_le_bytes());
            }
        }
    }
}

fn u16le(rec: &mut Vec<u8>, v: u16) {
    rec.extend_from_slice(&v.to_le_bytes());
}
fn u32le(rec: &mut Vec<u8>, v: u32) {
    rec.extend_from_slice(&v.to_le_bytes());
}
fn u64le(rec: &mut Vec<u8>, v: u64) {
    rec.extend_from_slice(&v.to_le_bytes());
}
fn range(rec: &mut Vec<u8>, first: usize, count: usize) {
    u32le(rec, first as u32);
    u32le(rec, count as u32);
}

/// Compiles a policy into the binary form the hypervisor reads
/// (`NEXUS/POLICY.BIN`). Expects a validated policy, as [`crate::load_file`]
/// and [`crate::parse_str`] return; a VRAM owner or `shared_with` name that
/// names no partition is encoded as an index the decoder rejects.
pub fn compile(policy: &Policy) -> Vec<u8> {
    let mut sec: [Vec<u8>; SECTION_COUNT] = Default::default();
    let mut counts = [0usize; SECTION_COUNT];
    let mut strings = Strings::default();
    let index_of = |name: &str| -> u16 {
        policy
            .partitions
            .iter()
            .position(|p| p.name == name)
            .map_or(u16::MAX, |i| i as u16)
    };

    // Machine.
    let m = &policy.machine;
    let rec = &mut sec[SEC_MACHINE];
    strings.put(rec, Some(&m.name));
    u64le(rec, m.memory);
    u64le(rec, m.gpu.as_ref().map_or(0, |g| g.vram));
    strings.put(rec, m.gpu.as_ref().map(|g| g.name.as_str()));
    u32le(
        rec,
        m.gpu.as_ref().and_then(|g| g.bdf).map_or(0, |b| b.to_u32()),
    );
    let c = m.cpu_counts.unwrap_or_default();
    u32le(rec, c.p);
    u32le(rec, c.e);
    let mut flags = 0;
    if let Some(gpu) = &m.gpu {
        flags |= MF_GPU;
        if gpu.bdf.is_some() {
            flags |= MF_GPU_BDF;
        }
    }
    if m.cpu_counts.is_some() {
        flags |= MF_CPU_COUNTS;
    }
    u32le(rec, flags);
    let hv = m.hypervisor_memory;
    u64le(rec, hv.map_or(0, |h| h.base));
    u64le(rec, hv.map_or(0, |h| h.size));
    counts[SEC_MACHINE] = 1;

    for cpu in &m.cpus {
        let rec = &mut sec[SEC_MACHINE_CPUS];
        u32le(rec, cpu.apic_id);
        rec.extend_from_slice(&[cpu.class.code(), 0, 0, 0]);
        counts[SEC_MACHINE_CPUS] += 1;
    }
    for dev in &m.pci {
        let rec = &mut sec[SEC_MACHINE_PCI];
        u32le(rec, dev.bdf.to_u32());
        strings.put(rec, dev.name.as_deref());
        counts[SEC_MACHINE_PCI] += 1;
    }

    for p in &policy.partitions {
        let cpus_first = counts[SEC_CPUS];
        for &apic_id in &p.apic_ids {
            let rec = &mut sec[SEC_CPUS];
            rec.extend_from_slice(&[CPU_KIND_APIC_ID, 0, 0, 0]);
            u32le(rec, apic_id);
            counts[SEC_CPUS] += 1;
        }
        for req in &p.cpus {
            let rec = &mut sec[SEC_CPUS];
            rec.extend_from_slice(&[CPU_KIND_CLASS_COUNT, req.class.code(), 0, 0]);
            u32le(rec, req.count);
            counts[SEC_CPUS] += 1;
        }
        let mem_first = counts[SEC_MEMORY];
        for r in &p.memory {
            let shared_first = counts[SEC_SHARED_WITH];
            for name in &r.shared_with {
                u16le(&mut sec[SEC_SHARED_WITH], index_of(name));
                counts[SEC_SHARED_WITH] += 1;
            }
            let rec = &mut sec[SEC_MEMORY];
            u64le(rec, r.base);
            u64le(rec, r.size);
            rec.extend_from_slice(&[r.kind.code(), 0, 0, 0]);
            range(rec, shared_first, r.shared_with.len());
            u32le(rec, 0);
            counts[SEC_MEMORY] += 1;
        }
        let pci_first = counts[SEC_PCI];
        for bdf in &p.pci {
            u32le(&mut sec[SEC_PCI], bdf.to_u32());
            counts[SEC_PCI] += 1;
        }
        let rec = &mut sec[SEC_PARTITIONS];
        strings.put(rec, Some(&p.name));
        strings.put(rec, p.image.as_deref());
        strings.put(rec, p.cmdline.as_deref());
        let mut flags = 0;
        if p.low_latency {
            flags |= PF_LOW_LATENCY;
        }
        if p.memory_remainder {
            flags |= PF_MEMORY_REMAINDER;
        }
        if p.share_smt_core {
            flags |= PF_SHARE_SMT_CORE;
        }
        rec.extend_from_slice(&[p.role.code(), flags, 0, 0]);
        u32le(rec, p.abi_groups.bits());
        range(rec, cpus_first, p.apic_ids.len() + p.cpus.len());
        range(rec, mem_first, p.memory.len());
        range(rec, pci_first, p.pci.len());
        u64le(rec, 0);
        strings.put(rec, p.boot.as_deref());
        counts[SEC_PARTITIONS] += 1;
    }

    let mut offset: u64 = 0;
    for v in &policy.vram {
        let rec = &mut sec[SEC_VRAM];
        strings.put(rec, Some(&v.name));
        u64le(rec, offset);
        u64le(rec, v.size);
        u16le(rec, index_of(&v.owner));
        rec.extend_from_slice(&[0; 6]);
        offset = offset.saturating_add(v.size);
        counts[SEC_VRAM] += 1;
    }

    counts[SEC_STRINGS] = strings.0.len();
    sec[SEC_STRINGS] = strings.0;

    // Header, section table, then the sections in table order.
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    u16le(&mut out, VERSION_MAJOR);
    u16le(&mut out, VERSION_MINOR);
    u32le(&mut out, 0); // total length, patched below
    u32le(&mut out, 0); // CRC, patched below
    u16le(&mut out, SECTION_COUNT as u16);
    u16le(&mut out, 0);
    let mut at = HEADER_LEN + SECTION_COUNT * SECTION_ENTRY_LEN;
    for (i, bytes) in sec.iter().enumerate() {
        debug_assert_eq!(
            bytes.len(),
            counts[i] * WRITTEN_RECORD_SIZE[i],
            "section {i}"
        );
        u32le(&mut out, at as u32);
        u32le(&mut out, counts[i] as u32);
        u32le(&mut out, WRITTEN_RECORD_SIZE[i] as u32);
        at += bytes.len();
    }
    for bytes in &sec {
        out.extend_from_slice(bytes);
    }
    let total = out.len() as u32;
    out[HDR_TOTAL_LEN..HDR_TOTAL_LEN + 4].copy_from_slice(&total.to_le_bytes());
    let crc = checksum(&out);
    out[HDR_CRC..HDR_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Rebuilds the source [`Policy`] from a compiled one (`compile` then
/// `decompile` gives back an equal policy).
pub fn decompile(c: &CompiledPolicy<'_>) -> Policy {
    let name_of = |i: usize| {
        c.partition(i)
            .map_or_else(String::new, |p| p.name().to_string())
    };
    let m = c.machine();
    let machine = Machine {
        name: m.name().to_string(),
        memory: m.memory(),
        cpus: m
            .cpus()
            .map(|x| MachineCpu {
                apic_id: x.apic_id,
                class: x.class,
            })
            .collect(),
        cpu_counts: m.cpu_counts().map(|x| CpuCounts { p: x.p, e: x.e }),
        gpu: m.gpu().map(|g| Gpu {
            name: g.name.to_string(),
            vram: g.vram,
            bdf: g.bdf,
        }),
        pci: m
            .pci()
            .map(|d| PciDevice {
                bdf: d.bdf,
                name: d.name.map(str::to_string),
            })
            .collect(),
        hypervisor_memory: m
            .hypervisor_memory()
            .map(|(base, size)| HypervisorMemory { base, size }),
    };
    let partitions = c
        .partitions()
        .map(|p| {
            let mut apic_ids = Vec::new();
            let mut cpus = Vec::new();
            for entry in p.cpus() {
                match entry {
                    CpuEntry::ApicId(id) => apic_ids.push(id),
                    CpuEntry::Class { class, count } => cpus.push(CpuRequest { class, count }),
                }
            }
            Partition {
                name: p.name().to_string(),
                role: p.role(),
                cpus,
                apic_ids,
                low_latency: p.low_latency(),
                share_smt_core: p.share_smt_core(),
                memory: p
                    .memory()
                    .map(|r| MemoryRegion {
                        base: r.base(),
                        size: r.size(),
                        kind: r.kind(),
                        shared_with: r.shared_with().map(name_of).collect(),
                    })
                    .collect(),
                memory_remainder: p.memory_remainder(),
                pci: p.pci().collect(),
                abi_groups: p.groups(),
                image: p.image().map(str::to_string),
                cmdline: p.cmdline().map(str::to_string),
                boot: p.boot().map(str::to_string),
            }
        })
        .collect();
    let vram = c
        .vram_regions()
        .map(|v| VramRegion {
            name: v.name().to_string(),
            size: v.size(),
            owner: name_of(v.owner_index()),
        })
        .collect();
    Policy {
        machine,
        partitions,
        vram,
    }
}
