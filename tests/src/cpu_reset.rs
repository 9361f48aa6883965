//! What QEMU's `-d cpu_reset` log says about a run that ended in a reset.
//!
//! A host-mode triple fault of the hypervisor resets the machine before it can print
//! anything, and `-no-reboot` turns the reset into QEMU exiting with status 0: the consoles
//! then end mid-sentence. QEMU logs `Triple fault` when one caused the reset, which tells it
//! from a reset the guest asked for (reset port, keyboard controller, ACPI). QEMU logs each
//! CPU's registers when that CPU is reset; the firmware's start-up INITs do so early in every
//! boot, and with `-no-reboot` nothing is dumped at the triple fault itself, so only dumps
//! logged after the `Triple fault` line describe the crash (there are some when QEMU reboots).

/// Lines of a CPU dump worth showing (general registers, RIP, control and table registers).
const KEPT: [&str; 9] = [
    "RAX=", "RSI=", "R8 =", "R12=", "RIP=", "CR0=", "GDT=", "IDT=", "EFER=",
];

/// One CPU's registers as QEMU logged them at its reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuDump {
    pub cpu: u32,
    pub lines: Vec<String>,
}

/// What a `-d cpu_reset` log says: whether a triple fault was logged, and the CPU dumps
/// logged after it (lowest CPU first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResetSummary {
    pub triple_fault: bool,
    pub after: Vec<CpuDump>,
}

impl ResetSummary {
    /// Parse a whole log; `None` when it holds neither a dump nor a triple fault.
    pub fn parse(log: &str) -> Option<Self> {
        let mut s = ResetSummary::default();
        let mut any = false;
        let mut current: Option<CpuDump> = None;
        let done = |d: Option<CpuDump>, s: &mut ResetSummary| {
            if let Some(d) = d {
                if s.triple_fault {
                    s.after.retain(|o| o.cpu != d.cpu);
                    s.after.push(d);
                }
            }
        };
        for line in log.lines() {
            if line.starts_with("Triple fault") {
                done(current.take(), &mut s);
                s.triple_fault = true;
                s.after.clear();
                any = true;
            } else if let Some(rest) = line.strip_prefix("CPU Reset (CPU ") {
                done(current.take(), &mut s);
                any = true;
                let cpu = rest
                    .trim_end_matches(')')
                    .trim()
                    .parse()
                    .unwrap_or(u32::MAX);
                current = Some(CpuDump {
                    cpu,
                    lines: Vec::new(),
                });
            } else if let Some(d) = current.as_mut() {
                if KEPT.iter().any(|k| line.starts_with(k)) {
                    d.lines.push(line.trim_end().to_string());
                }
            }
        }
        done(current, &mut s);
        s.after.sort_by_key(|d| d.cpu);
        any.then_some(s)
    }

    /// Read and parse the log at `path` (`None` when absent or empty of both).
    pub fn read(path: &std::path::Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        Self::parse(&String::from_utf8_lossy(&bytes))
    }
}

impl std::fmt::Display for ResetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.triple_fault {
            return writeln!(
                f,
                "QEMU logged no triple fault: the guest asked for the reset or power-off \
                 (reset port, keyboard controller, ACPI)"
            );
        }
        if self.after.is_empty() {
            return writeln!(
                f,
                "QEMU logged a triple fault (with -no-reboot it dumps no registers for it; \
                 run QEMU with -d int for the exceptions that led to it)"
            );
        }
        writeln!(
            f,
            "QEMU logged a triple fault; registers of the CPUs reset after it:"
        )?;
        for d in &self.after {
            writeln!(f, "  CPU {}:", d.cpu)?;
            for l in &d.lines {
                writeln!(f, "    {l}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "\
CPU Reset (CPU 1)
RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000060fb1
RIP=000000000000fff0 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0
";

    #[test]
    fn a_triple_fault_under_no_reboot_is_named_without_the_boot_dumps() {
        let s = ResetSummary::parse(&format!("{BOOT}Triple fault\n")).unwrap();
        assert!(s.triple_fault);
        assert!(
            s.after.is_empty(),
            "boot-time dumps say nothing about the crash"
        );
        let text = s.to_string();
        assert!(
            text.starts_with("QEMU logged a triple fault (with -no-reboot"),
            "{text}"
        );
    }

    #[test]
    fn dumps_after_the_triple_fault_are_kept_with_their_key_lines() {
        let log = format!(
            "{BOOT}Triple fault
CPU Reset (CPU 0)
RAX=0000000000000001 RBX=0000000000000002 RCX=0000000000000003 RDX=0000000000000004
RSI=0000000000000005 RDI=0000000000000006 RBP=0000000000000007 RSP=0000000042013f00
RIP=000000007e03f856 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =0010 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
CR0=80010033 CR2=0000000000000000 CR3=0000000042000000 CR4=00000668
CPU Reset (CPU 1)
RIP=000000007e0400aa RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1
"
        );
        let s = ResetSummary::parse(&log).unwrap();
        assert_eq!(s.after.len(), 2);
        assert_eq!(s.after[0].cpu, 0);
        assert!(s.after[0].lines[2].starts_with("RIP=000000007e03f856"));
        assert!(s.after[0]
            .lines
            .iter()
            .any(|l| l.contains("CR3=0000000042000000")));
        assert!(!s.after[0].lines.iter().any(|l| l.starts_with("ES =")));
        assert!(s.after[1].lines[0].starts_with("RIP=000000007e0400aa"));
        let text = s.to_string();
        assert!(
            text.contains("  CPU 0:\n    RAX=0000000000000001"),
            "{text}"
        );
    }

    #[test]
    fn a_reset_without_a_triple_fault_is_the_guests_own() {
        assert_eq!(ResetSummary::parse(""), None);
        let s = ResetSummary::parse(BOOT).unwrap();
        assert!(!s.triple_fault);
        assert!(s.to_string().contains("no triple fault"));
    }
}
