//! What QEMU's `-d cpu_reset` log says about a run that ended in a reset.
//!
//! A host-mode triple fault of the hypervisor resets the machine before it can print
//! anything, and `-no-reboot` turns the reset into QEMU exiting with status 0: the consoles
//! then end mid-sentence. QEMU logs each CPU's registers as it resets (and `Triple fault`
//! when one caused it), so the log names the CPU, RIP, RSP and control registers at the
//! moment of the crash. The firmware's own start-up INITs reset the APs early in every boot;
//! only the last reset of each CPU says how the run ended.

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

/// The end of a `-d cpu_reset` log: whether a triple fault was logged, and each CPU's last
/// dump (lowest CPU first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResetSummary {
    pub triple_fault: bool,
    pub last: Vec<CpuDump>,
}

impl ResetSummary {
    /// Parse a whole log; `None` when it holds no dump.
    pub fn parse(log: &str) -> Option<Self> {
        let mut s = ResetSummary::default();
        let mut current: Option<CpuDump> = None;
        let done = |d: Option<CpuDump>, s: &mut ResetSummary| {
            if let Some(d) = d {
                s.last.retain(|o| o.cpu != d.cpu);
                s.last.push(d);
            }
        };
        for line in log.lines() {
            if line.starts_with("Triple fault") {
                s.triple_fault = true;
            }
            if let Some(rest) = line.strip_prefix("CPU Reset (CPU ") {
                done(current.take(), &mut s);
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
        s.last.sort_by_key(|d| d.cpu);
        (!s.last.is_empty()).then_some(s)
    }

    /// Read and parse the log at `path` (`None` when absent or without a dump).
    pub fn read(path: &std::path::Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        Self::parse(&String::from_utf8_lossy(&bytes))
    }
}

impl std::fmt::Display for ResetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}; each CPU's registers at its last reset:",
            if self.triple_fault {
                "QEMU logged a triple fault"
            } else {
                "QEMU logged no triple fault (a reset request: reset port, keyboard controller, ACPI)"
            }
        )?;
        for d in &self.last {
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

    const LOG: &str = "\
CPU Reset (CPU 1)
RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000060fb1
RIP=000000000000fff0 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0
CPU Reset (CPU 0)
RAX=0000000000000001 RBX=0000000000000002 RCX=0000000000000003 RDX=0000000000000004
RSI=0000000000000005 RDI=0000000000000006 RBP=0000000000000007 RSP=0000000042013f00
RIP=000000007e03f856 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =0010 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
GDT=     0000000042003000 00000027
IDT=     0000000042002000 00000fff
CR0=80010033 CR2=0000000000000000 CR3=0000000042000000 CR4=00000668
EFER=0000000000001d00
Triple fault
CPU Reset (CPU 1)
RAX=00000000000000aa RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000
RIP=000000007e0400aa RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1
";

    #[test]
    fn the_last_dump_of_each_cpu_is_kept_with_its_key_lines() {
        let s = ResetSummary::parse(LOG).unwrap();
        assert!(s.triple_fault);
        assert_eq!(s.last.len(), 2);
        assert_eq!(s.last[0].cpu, 0);
        assert!(s.last[0].lines[2].starts_with("RIP=000000007e03f856"));
        assert!(s.last[0]
            .lines
            .iter()
            .any(|l| l.contains("CR3=0000000042000000")));
        assert!(!s.last[0].lines.iter().any(|l| l.starts_with("ES =")));
        // CPU 1's boot-time reset is replaced by its last one.
        assert_eq!(s.last[1].cpu, 1);
        assert!(s.last[1].lines[1].starts_with("RIP=000000007e0400aa"));
        let text = s.to_string();
        assert!(text.starts_with("QEMU logged a triple fault"), "{text}");
        assert!(
            text.contains("  CPU 0:\n    RAX=0000000000000001"),
            "{text}"
        );
    }

    #[test]
    fn a_log_without_dumps_says_nothing() {
        assert_eq!(ResetSummary::parse(""), None);
        assert_eq!(ResetSummary::parse("Triple fault\n"), None);
        let s = ResetSummary::parse("CPU Reset (CPU 3)\nRIP=0\n").unwrap();
        assert!(!s.triple_fault);
        assert!(s.to_string().contains("no triple fault"));
    }
}
