//! Typed, copyable views over a decoded policy's records. `decode` has
//! checked every field these read, so they return plain values; the fallbacks
//! (`unwrap_or`) only keep the code panic-free.

use core::iter::FusedIterator;

use super::format::*;
use super::reader::{range_at, u16_at, u32_at, u64_at, u8_at};
use super::CompiledPolicy;
use crate::groups::GroupSet;
use crate::types::{Bdf, CoreClass, MemoryType, Role};

/// Iterator over records `next..end` of one section.
#[derive(Clone)]
pub struct Records<'a, T> {
    policy: CompiledPolicy<'a>,
    next: usize,
    end: usize,
    read: fn(CompiledPolicy<'a>, usize) -> T,
}

impl<'a, T> Records<'a, T> {
    pub(super) fn new(
        policy: CompiledPolicy<'a>,
        first: usize,
        count: usize,
        read: fn(CompiledPolicy<'a>, usize) -> T,
    ) -> Self {
        Records {
            policy,
            next: first,
            end: first.saturating_add(count),
            read,
        }
    }
}

impl<T> Iterator for Records<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some((self.read)(self.policy, i))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for Records<'_, T> {}
impl<T> FusedIterator for Records<'_, T> {}

fn str_or<'a>(p: &CompiledPolicy<'a>, rec: &[u8], off: usize) -> Option<&'a str> {
    p.string(rec, off).ok().flatten()
}

/// Logical CPUs per class, resolved to APIC IDs at boot (CPUID leaf 0x1A).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassCounts {
    pub p: u32,
    pub e: u32,
}

impl ClassCounts {
    pub fn get(&self, class: CoreClass) -> u32 {
        match class {
            CoreClass::P => self.p,
            CoreClass::E => self.e,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuInfo<'a> {
    pub name: &'a str,
    pub vram: u64,
    pub bdf: Option<Bdf>,
}

/// A CPU the machine lists explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineCpu {
    pub apic_id: u32,
    pub class: CoreClass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciDevice<'a> {
    pub bdf: Bdf,
    pub name: Option<&'a str>,
}

/// The `[machine]` record.
#[derive(Clone, Copy, Debug)]
pub struct MachineView<'a> {
    policy: CompiledPolicy<'a>,
    rec: &'a [u8],
}

impl<'a> MachineView<'a> {
    pub(super) fn new(policy: CompiledPolicy<'a>) -> Self {
        MachineView {
            policy,
            rec: policy.record(SEC_MACHINE, 0),
        }
    }

    fn flags(&self) -> u32 {
        u32_at(self.rec, M_FLAGS).unwrap_or(0)
    }

    pub fn name(&self) -> &'a str {
        str_or(&self.policy, self.rec, M_NAME).unwrap_or("")
    }

    /// Installed RAM in bytes.
    pub fn memory(&self) -> u64 {
        u64_at(self.rec, M_MEMORY).unwrap_or(0)
    }

    pub fn gpu(&self) -> Option<GpuInfo<'a>> {
        let flags = self.flags();
        (flags & MF_GPU != 0).then(|| GpuInfo {
            name: str_or(&self.policy, self.rec, M_GPU_NAME).unwrap_or(""),
            vram: u64_at(self.rec, M_GPU_VRAM).unwrap_or(0),
            bdf: (flags & MF_GPU_BDF != 0)
                .then(|| Bdf::from_u32(u32_at(self.rec, M_GPU_BDF).unwrap_or(0))),
        })
    }

    /// `Some` when the machine gives CPU counts per class instead of a list.
    pub fn cpu_counts(&self) -> Option<ClassCounts> {
        (self.flags() & MF_CPU_COUNTS != 0).then(|| ClassCounts {
            p: u32_at(self.rec, M_COUNT_P).unwrap_or(0),
            e: u32_at(self.rec, M_COUNT_E).unwrap_or(0),
        })
    }

    /// The hypervisor's own memory `(base, bytes)`, when the policy places it (format 1.1;
    /// `None` in 1.0 blobs, whose machine record ends before these fields).
    pub fn hypervisor_memory(&self) -> Option<(u64, u64)> {
        let base = u64_at(self.rec, M_HV_BASE)?;
        let size = u64_at(self.rec, M_HV_SIZE)?;
        (size != 0).then_some((base, size))
    }

    /// Explicitly listed CPUs (empty when the machine gives counts).
    pub fn cpus(&self) -> Records<'a, MachineCpu> {
        let n = self.policy.count(SEC_MACHINE_CPUS);
        Records::new(self.policy, 0, n, |p, i| {
            let rec = p.record(SEC_MACHINE_CPUS, i);
            MachineCpu {
                apic_id: u32_at(rec, MC_APIC_ID).unwrap_or(0),
                class: u8_at(rec, MC_CLASS)
                    .and_then(CoreClass::from_code)
                    .unwrap_or(CoreClass::P),
            }
        })
    }

    /// PCI functions the machine lists.
    pub fn pci(&self) -> Records<'a, PciDevice<'a>> {
        let n = self.policy.count(SEC_MACHINE_PCI);
        Records::new(self.policy, 0, n, |p, i| {
            let rec = p.record(SEC_MACHINE_PCI, i);
            PciDevice {
                bdf: Bdf::from_u32(u32_at(rec, MP_BDF).unwrap_or(0)),
                name: str_or(&p, rec, MP_NAME),
            }
        })
    }
}

/// One CPU request of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuEntry {
    /// This exact CPU.
    ApicId(u32),
    /// `count` logical CPUs of `class`, chosen at boot.
    Class { class: CoreClass, count: u32 },
}

/// One partition.
#[derive(Clone, Copy, Debug)]
pub struct PartitionView<'a> {
    policy: CompiledPolicy<'a>,
    index: usize,
    rec: &'a [u8],
}

impl<'a> PartitionView<'a> {
    pub(super) fn new(policy: CompiledPolicy<'a>, index: usize) -> Self {
        PartitionView {
            policy,
            index,
            rec: policy.record(SEC_PARTITIONS, index),
        }
    }

    /// Position in the policy (VRAM owners and `shared_with` use it).
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn name(&self) -> &'a str {
        str_or(&self.policy, self.rec, P_NAME).unwrap_or("")
    }

    pub fn role(&self) -> Role {
        u8_at(self.rec, P_ROLE)
            .and_then(Role::from_code)
            .unwrap_or(Role::Test)
    }

    fn flags(&self) -> u8 {
        u8_at(self.rec, P_FLAGS).unwrap_or(0)
    }

    pub fn low_latency(&self) -> bool {
        self.flags() & PF_LOW_LATENCY != 0
    }

    /// May share SMT cores with another partition that allows it too.
    pub fn share_smt_core(&self) -> bool {
        self.flags() & PF_SHARE_SMT_CORE != 0
    }

    /// Primary only: also owns all RAM no other partition names.
    pub fn memory_remainder(&self) -> bool {
        self.flags() & PF_MEMORY_REMAINDER != 0
    }

    /// Hypercall groups the partition may call.
    pub fn groups(&self) -> GroupSet {
        u32_at(self.rec, P_GROUPS)
            .and_then(GroupSet::from_bits)
            .unwrap_or(GroupSet::EMPTY)
    }

    /// Guest image name (`NEXUS/<IMAGE>.ELF` on the ESP).
    pub fn image(&self) -> Option<&'a str> {
        str_or(&self.policy, self.rec, P_IMAGE)
    }

    /// The policy's `cmdline`; for the primary also its `boot` application's load options.
    pub fn cmdline(&self) -> Option<&'a str> {
        str_or(&self.policy, self.rec, P_CMDLINE)
    }

    /// The primary's OS loader: an absolute path (`\NEXUS\VMLINUZ.EFI`) on the hypervisor's
    /// volume, checked by the decoder ([`crate::boot::check_boot_path`], primary only).
    /// `None` when the policy names none, or for records older than format 1.2.
    pub fn boot(&self) -> Option<&'a str> {
        if self.rec.len() < P_BOOT + STR_REF_LEN {
            return None;
        }
        str_or(&self.policy, self.rec, P_BOOT)
    }

    fn range(&self, off: usize) -> (usize, usize) {
        range_at(self.rec, off).unwrap_or((0, 0))
    }

    pub fn cpus(&self) -> Records<'a, CpuEntry> {
        let (first, count) = self.range(P_CPUS);
        Records::new(self.policy, first, count, |p, i| {
            let rec = p.record(SEC_CPUS, i);
            let value = u32_at(rec, C_VALUE).unwrap_or(0);
            match (
                u8_at(rec, C_KIND),
                u8_at(rec, C_CLASS).and_then(CoreClass::from_code),
            ) {
                (Some(CPU_KIND_CLASS_COUNT), Some(class)) => CpuEntry::Class {
                    class,
                    count: value,
                },
                _ => CpuEntry::ApicId(value),
            }
        })
    }

    pub fn memory(&self) -> Records<'a, MemoryView<'a>> {
        let (first, count) = self.range(P_MEMORY);
        Records::new(self.policy, first, count, MemoryView::new)
    }

    /// PCI functions passed through to this partition.
    pub fn pci(&self) -> Records<'a, Bdf> {
        let (first, count) = self.range(P_PCI);
        Records::new(self.policy, first, count, |p, i| {
            Bdf::from_u32(u32_at(p.record(SEC_PCI, i), 0).unwrap_or(0))
        })
    }

    /// The VRAM regions this partition owns.
    pub fn vram(&self) -> impl Iterator<Item = VramView<'a>> + 'a {
        let index = self.index;
        self.policy
            .vram_regions()
            .filter(move |v| v.owner_index() == index)
    }
}

/// One memory region of a partition.
#[derive(Clone, Copy, Debug)]
pub struct MemoryView<'a> {
    policy: CompiledPolicy<'a>,
    rec: &'a [u8],
}

impl<'a> MemoryView<'a> {
    fn new(policy: CompiledPolicy<'a>, index: usize) -> Self {
        MemoryView {
            policy,
            rec: policy.record(SEC_MEMORY, index),
        }
    }

    /// Host-physical base (identity-mapped).
    pub fn base(&self) -> u64 {
        u64_at(self.rec, R_BASE).unwrap_or(0)
    }

    pub fn size(&self) -> u64 {
        u64_at(self.rec, R_SIZE).unwrap_or(0)
    }

    /// Exclusive end (validation guarantees no overflow; saturates otherwise).
    pub fn end(&self) -> u64 {
        self.base().saturating_add(self.size())
    }

    pub fn kind(&self) -> MemoryType {
        u8_at(self.rec, R_TYPE)
            .and_then(MemoryType::from_code)
            .unwrap_or(MemoryType::Ram)
    }

    /// Indices of the other partitions that also map a shared region.
    pub fn shared_with(&self) -> Records<'a, usize> {
        let (first, count) = range_at(self.rec, R_SHARED).unwrap_or((0, 0));
        Records::new(self.policy, first, count, |p, i| {
            u16_at(p.record(SEC_SHARED_WITH, i), 0).map_or(0, usize::from)
        })
    }
}

/// One `[[vram]]` region.
#[derive(Clone, Copy, Debug)]
pub struct VramView<'a> {
    policy: CompiledPolicy<'a>,
    rec: &'a [u8],
}

impl<'a> VramView<'a> {
    pub(super) fn new(policy: CompiledPolicy<'a>, index: usize) -> Self {
        VramView {
            policy,
            rec: policy.record(SEC_VRAM, index),
        }
    }

    pub fn name(&self) -> &'a str {
        str_or(&self.policy, self.rec, V_NAME).unwrap_or("")
    }

    /// Byte offset in VRAM: regions are laid out in policy order from 0.
    pub fn offset(&self) -> u64 {
        u64_at(self.rec, V_OFFSET).unwrap_or(0)
    }

    pub fn size(&self) -> u64 {
        u64_at(self.rec, V_SIZE).unwrap_or(0)
    }

    pub fn owner_index(&self) -> usize {
        u16_at(self.rec, V_OWNER).map_or(0, usize::from)
    }

    pub fn owner(&self) -> Option<PartitionView<'a>> {
        self.policy.partition(self.owner_index())
    }
}
