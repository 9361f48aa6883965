//! A guard for a failure QEMU's TCG can cause (docs/boot.md, "The QEMU FXRSTOR race"): a
//! vCPU's VMCB save area holding the host's own state (RIP in host code, CR3 the host's page
//! tables). There, a racy write from another vCPU thread can leave CPU 0 running host code
//! with nested paging still on, and the stage-2 fault of its next page walk becomes a
//! #VMEXIT taken in host mode, which stores the host's registers into the last VMCB; the
//! next entry would run host code as the guest. The backend compares each VMCB's RIP and
//! CR3 with the host's before every entry and after every exit and logs, once per vCPU,
//! what the exit looked like, the VMCB's RAX and RSP and the last exits. No guest can trip
//! it by accident: it would need the host's code address as RIP and the host's page tables
//! as CR3 at once.
//!
//! A [`PageLedger`] also checks, as each vCPU is made, that no CPU's host save area is
//! another vCPU's VMCB (a VMRUN would store one CPU's host state in another's guest).

use core::sync::atomic::{AtomicU64, Ordering};

/// Whether a VMCB save area's `rip` and `cr3` are the host's resume point and page tables.
pub fn holds_host_state(rip: u64, cr3: u64, resume: u64, host_cr3: u64) -> bool {
    rip == resume && cr3 == host_cr3
}

/// One vCPU's VMCB and the host save area (VM_HSAVE_PA) of the CPU that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuPages {
    pub vmcb: u64,
    pub host_save: u64,
}

impl VcpuPages {
    /// Whether VMRUN on one of the two would store its host state in the other's guest, or
    /// both share a VMCB with different host save areas (two CPUs running one VMCB).
    pub fn clashes_with(&self, other: &VcpuPages) -> bool {
        self.host_save == other.vmcb
            || self.vmcb == other.host_save
            || self.vmcb == self.host_save
            || (self.vmcb == other.vmcb) != (self.host_save == other.host_save)
    }
}

/// The pages of every vCPU made so far (the first [`PageLedger::LEN`] distinct ones), shared
/// by all CPUs without a lock.
pub struct PageLedger {
    slots: [(AtomicU64, AtomicU64); PageLedger::LEN],
}

impl Default for PageLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl PageLedger {
    pub const LEN: usize = 64;

    pub const fn new() -> Self {
        PageLedger {
            slots: [const { (AtomicU64::new(0), AtomicU64::new(0)) }; PageLedger::LEN],
        }
    }

    /// Record `vmcb` with `host_save` (once per pair) and return a recorded pair they clash
    /// with, if any.
    pub fn register(&self, vmcb: u64, host_save: u64) -> Option<VcpuPages> {
        let me = VcpuPages { vmcb, host_save };
        if me.clashes_with(&me) {
            return Some(me);
        }
        let mut placed = false;
        let mut clash = None;
        for (v, h) in &self.slots {
            let mut other = VcpuPages {
                vmcb: v.load(Ordering::Acquire),
                host_save: h.load(Ordering::Acquire),
            };
            if other.vmcb == 0 {
                if placed {
                    continue;
                }
                if v.compare_exchange(0, vmcb, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    h.store(host_save, Ordering::Release);
                    placed = true;
                    continue;
                }
                other.vmcb = v.load(Ordering::Acquire);
                other.host_save = h.load(Ordering::Acquire);
            }
            if other == me {
                placed = true;
            } else if clash.is_none() && me.clashes_with(&other) {
                clash = Some(other);
            }
        }
        clash
    }
}

/// When the check ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    BeforeEntry,
    AfterExit,
}

impl When {
    pub fn name(self) -> &'static str {
        match self {
            When::BeforeEntry => "before an entry",
            When::AfterExit => "right after an exit",
        }
    }
}

/// One exit as the VMCB showed it, with what was injected at the entry before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// RIP and CR3 the VMCB held when VMRUN was issued.
    pub entry_rip: u64,
    pub entry_cr3: u64,
    pub code: u64,
    pub rip: u64,
    pub info1: u64,
    pub info2: u64,
    pub intinfo: u64,
    pub injected: u64,
}

/// The last [`ExitHistory::LEN`] exits of a vCPU (a ring; costs a few stores per exit).
#[derive(Debug, Default)]
pub struct ExitHistory {
    ring: [ExitRecord; ExitHistory::LEN],
    next: usize,
    count: u64,
}

impl ExitHistory {
    pub const LEN: usize = 8;

    pub fn push(&mut self, r: ExitRecord) {
        self.ring[self.next] = r;
        self.next = (self.next + 1) % Self::LEN;
        self.count += 1;
    }

    /// The recorded exits, newest first, one line each.
    pub fn lines(&self) -> impl Iterator<Item = ExitLine> + '_ {
        let n = self.count.min(Self::LEN as u64) as usize;
        (1..=n).map(move |back| {
            let r = self.ring[(self.next + Self::LEN - back) % Self::LEN];
            ExitLine {
                number: self.count + 1 - back as u64,
                r,
            }
        })
    }
}

/// An [`ExitRecord`] with its number since the vCPU was made, for the log.
pub struct ExitLine {
    number: u64,
    r: ExitRecord,
}

impl core::fmt::Display for ExitLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let r = &self.r;
        write!(
            f,
            "#{} entered at rip {:#x} cr3 {:#x}: code {:#x} rip {:#x} info1 {:#x} info2 {:#x} \
             exitintinfo {:#x} injected {:#x}",
            self.number,
            r.entry_rip,
            r.entry_cr3,
            r.code,
            r.rip,
            r.info1,
            r.info2,
            r.intinfo,
            r.injected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_resume_point_with_the_host_tables_counts() {
        let (resume, host_cr3) = (0x7e03_f856, 0x4200_0000);
        assert!(holds_host_state(resume, host_cr3, resume, host_cr3));
        // A guest at that address with its own tables, or with the host's CR3 elsewhere
        // (a hostile test guest may load any CR3), is a guest.
        assert!(!holds_host_state(resume, 0x1000, resume, host_cr3));
        assert!(!holds_host_state(
            0xffff_ffff_8100_0000,
            host_cr3,
            resume,
            host_cr3
        ));
        assert_eq!(When::AfterExit.name(), "right after an exit");
    }

    #[test]
    fn a_host_save_area_that_is_another_vcpus_vmcb_clashes() {
        let ledger = PageLedger::new();
        // Each CPU's own pages: no clash, and registering again changes nothing.
        assert_eq!(ledger.register(0x42e1000, 0x42df000), None);
        assert_eq!(ledger.register(0x4302000, 0x4300000), None);
        assert_eq!(ledger.register(0x42e1000, 0x42df000), None);
        // A CPU whose VM_HSAVE_PA is the first vCPU's VMCB.
        assert_eq!(
            ledger.register(0x4323000, 0x42e1000),
            Some(VcpuPages {
                vmcb: 0x42e1000,
                host_save: 0x42df000
            })
        );
        // A VMCB run from a CPU with another host save area (two CPUs on one VMCB).
        assert!(ledger.register(0x4302000, 0x4400000).is_some());
        // A CPU whose host save area is its own VMCB.
        let same = VcpuPages {
            vmcb: 0x4500000,
            host_save: 0x4500000,
        };
        assert_eq!(ledger.register(same.vmcb, same.host_save), Some(same));
        assert!(!VcpuPages {
            vmcb: 1,
            host_save: 2
        }
        .clashes_with(&VcpuPages {
            vmcb: 3,
            host_save: 4
        }));
    }

    #[test]
    fn the_history_keeps_the_last_exits_newest_first() {
        extern crate std;
        use std::string::ToString;
        let mut h = ExitHistory::default();
        assert_eq!(h.lines().count(), 0);
        for code in 1..=10u64 {
            h.push(ExitRecord {
                code,
                ..ExitRecord::default()
            });
        }
        let lines: std::vec::Vec<_> = h.lines().map(|l| l.to_string()).collect();
        assert_eq!(lines.len(), ExitHistory::LEN);
        assert!(
            lines[0].starts_with("#10 entered at rip 0x0 cr3 0x0: code 0xa "),
            "{}",
            lines[0]
        );
        assert!(
            lines[7].contains(": code 0x3 ") && lines[7].starts_with("#3 "),
            "{}",
            lines[7]
        );
    }
}
