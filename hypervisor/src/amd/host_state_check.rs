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
}
