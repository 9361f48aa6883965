//! The TOML policy schema (serde). Every table refuses unknown keys so that a
//! typo ("apic_id" for "apic_ids", "low_latncy") is an error, not a silent default.
//!
//! Field by field reference: docs/policy.md.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::string::String;
use std::vec::Vec;

use crate::groups::{GroupName, GroupSet};
use crate::types::{Bdf, CoreClass, MemoryType, Role};
use crate::units::parse_size;

/// A whole policy file: the machine, its partitions and the GPU memory split.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub machine: Machine,
    /// `[[partition]]` tables, in file order (the order is kept in the compiled form).
    #[serde(rename = "partition", default)]
    pub partitions: Vec<Partition>,
    /// `[[vram]]` tables: named slices of the GPU's memory, each owned by a partition.
    #[serde(default)]
    pub vram: Vec<VramRegion>,
}

/// `[machine]`: what the hardware has. Validation checks partitions against it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub name: String,
    /// Installed RAM in bytes ("64GiB").
    #[serde(deserialize_with = "bytes")]
    pub memory: u64,
    /// Explicit CPU list (APIC ID + class), for machines whose APIC IDs are
    /// known in advance (the QEMU machine). Exclusive with `cpu_counts`.
    #[serde(default)]
    pub cpus: Vec<MachineCpu>,
    /// Logical CPUs per class, resolved to APIC IDs at boot from CPUID leaf
    /// 0x1A (hybrid parts). Exclusive with `cpus`.
    #[serde(default)]
    pub cpu_counts: Option<CpuCounts>,
    #[serde(default)]
    pub gpu: Option<Gpu>,
    /// PCI functions present. When non-empty, partitions may only be assigned
    /// functions listed here.
    #[serde(default)]
    pub pci: Vec<PciDevice>,
    /// Where the hypervisor keeps its own memory (page pool: host page tables, stacks,
    /// control blocks, NPT/EPT), as Jailhouse's `hypervisor_memory`. When absent the
    /// firmware picks the place. Must not overlap any partition region.
    #[serde(default)]
    pub hypervisor_memory: Option<HypervisorMemory>,
}

/// `hypervisor_memory = { base = 0x4200_0000, size = "32MiB" }`: host-physical, 2 MiB
/// aligned (base and size), non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorMemory {
    #[serde(deserialize_with = "bytes")]
    pub base: u64,
    #[serde(deserialize_with = "bytes")]
    pub size: u64,
}

impl HypervisorMemory {
    /// Exclusive end, `None` if `base + size` overflows.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineCpu {
    pub apic_id: u32,
    pub class: CoreClass,
}

/// `cpu_counts = { P = 16, E = 16 }` (logical CPUs; an HT core counts twice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuCounts {
    #[serde(rename = "P", default)]
    pub p: u32,
    #[serde(rename = "E", default)]
    pub e: u32,
}

impl CpuCounts {
    pub fn get(&self, class: CoreClass) -> u32 {
        match class {
            CoreClass::P => self.p,
            CoreClass::E => self.e,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    /// Video memory in bytes ("16GiB"); `[[vram]]` regions must fit in it.
    #[serde(deserialize_with = "bytes")]
    pub vram: u64,
    #[serde(default)]
    pub bdf: Option<Bdf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciDevice {
    pub bdf: Bdf,
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[partition]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Unique; lowercase letters, digits, '-' and '_' (it prefixes serial lines).
    pub name: String,
    pub role: Role,
    /// CPUs by class: `{ class = "P", count = 4 }` or a list of such tables.
    #[serde(default, deserialize_with = "one_or_many")]
    pub cpus: Vec<CpuRequest>,
    /// CPUs by APIC ID (only on machines that list their CPUs).
    #[serde(default)]
    pub apic_ids: Vec<u32>,
    /// Latency-sensitive partition (gaming): its class requests are resolved
    /// first, to whole cores, and the hypervisor keeps its own work off them.
    #[serde(default)]
    pub low_latency: bool,
    /// May run on SMT siblings of a core whose other threads belong to another partition
    /// that also allows it. Off by default: no two partitions share a core (review M5),
    /// class requests take whole cores, and a policy that names siblings for two partitions
    /// does not fit the machine.
    #[serde(default)]
    pub share_smt_core: bool,
    /// Host-physical memory regions, identity-mapped into the partition.
    #[serde(default)]
    pub memory: Vec<MemoryRegion>,
    /// Primary only: also own every RAM range no other partition names
    /// (minus the hypervisor's own memory). Exclusive with `memory`.
    #[serde(default)]
    pub memory_remainder: bool,
    /// PCI functions passed through ("01:00.0").
    #[serde(default)]
    pub pci: Vec<Bdf>,
    /// Hypercall groups this partition may call.
    #[serde(default, deserialize_with = "group_set")]
    pub abi_groups: GroupSet,
    /// Guest image started by the hypervisor: ESP file `NEXUS/<IMAGE>.ELF`.
    #[serde(default)]
    pub image: Option<String>,
    /// Text the guest reads through the partition-info hypercall; for the primary also the
    /// load options of its `boot` application (the kernel command line).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Primary only: ESP path (`\NEXUS\VMLINUZ.EFI`) of the EFI application the hypervisor
    /// chain-loads from its own volume after the hand-over. Absent: the hypervisor returns
    /// to the firmware.
    #[serde(default)]
    pub boot: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuRequest {
    pub class: CoreClass,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRegion {
    /// Host-physical base ("4GiB" or 0x1_0000_0000), 4 KiB aligned.
    #[serde(deserialize_with = "bytes")]
    pub base: u64,
    /// Size in bytes ("60GiB"), a non-zero multiple of 4 KiB.
    #[serde(deserialize_with = "bytes")]
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: MemoryType,
    /// For `type = "shared"`: the other partitions that also map the region.
    #[serde(default)]
    pub shared_with: Vec<String>,
}

impl MemoryRegion {
    /// Exclusive end, `None` if `base + size` overflows.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }
}

/// `[[vram]]`: a named slice of GPU memory owned by one partition.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VramRegion {
    pub name: String,
    #[serde(deserialize_with = "bytes")]
    pub size: u64,
    /// Name of the owning partition.
    pub owner: String,
}

/// Accepts a non-negative integer or a size string ("4GiB", "0x4000_0000").
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct BytesVisitor;
    impl Visitor<'_> for BytesVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte count: an integer or a string like \"4GiB\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format_args!("{v} is negative")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(|e| E::custom(format_args!("{v:?}: {e}")))
        }
    }
    d.deserialize_any(BytesVisitor)
}

/// Accepts one table or an array of tables (`cpus = { class = "P", count = 4 }`
/// and `cpus = [{ ... }, { ... }]`), keeping the inner error messages.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OneOrMany<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table or an array of tables")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|one| vec![one])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(OneOrMany(std::marker::PhantomData))
}

fn group_set<'de, D: Deserializer<'de>>(d: D) -> Result<GroupSet, D::Error> {
    Ok(Vec::<GroupName>::deserialize(d)?
        .into_iter()
        .map(|g| g.0)
        .collect())
}
