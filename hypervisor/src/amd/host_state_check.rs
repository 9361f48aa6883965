//! A guard for one failure seen under QEMU 7.2 TCG (docs/boot.md, "Known limits"): a vCPU's
//! VMCB save area holding the host's own state (RIP the host's resume point after VMRUN, CR3
//! the host's page tables), so that its next entry runs host code as the guest, which
//! triple-faults. The backend compares each VMCB's RIP with the resume point before every
//! entry and after every exit (CR3 only when RIP matches); when both match it logs, once per
//! vCPU, what the exit looked like and where the host save area is, which is what is needed
//! to tell a corrupted VMCB from a replayed #VMEXIT. No guest can trip it by accident: it would
//! need the host's code address as RIP and the host's page tables as CR3 at once.

/// Whether a VMCB save area's `rip` and `cr3` are the host's resume point and page tables.
pub fn holds_host_state(rip: u64, cr3: u64, resume: u64, host_cr3: u64) -> bool {
    rip == resume && cr3 == host_cr3
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
            "#{} code {:#x} rip {:#x} info1 {:#x} info2 {:#x} exitintinfo {:#x} injected {:#x}",
            self.number, r.code, r.rip, r.info1, r.info2, r.intinfo, r.injected
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
        assert!(lines[0].starts_with("#10 code 0xa "), "{}", lines[0]);
        assert!(lines[7].starts_with("#3 code 0x3 "), "{}", lines[7]);
    }
}
