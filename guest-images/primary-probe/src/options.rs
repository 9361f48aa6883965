//! The probe's command line (the primary's policy `cmdline`, passed as load options).
//!
//! Words, in any order, each at most once:
//! - `nmis=N`: self-NMIs to send in each NMI round (default 10000, 1 to 1000000);
//! - `wait=S`: seconds to wait for every other CPU to answer the broadcast start-up IPI
//!   (default 120, 1 to 3600): a CPU of a running test partition answers only once its
//!   partition has ended;
//! - `cpus=A,B,...`: the APIC IDs the policy gives the primary. The probe compares them with
//!   the MADT the primary sees, and uses them where the firmware has no ACPI tables (OVMF
//!   under Bochs).
//!
//! Anything else is an error, so a typo in a policy fails the run instead of being ignored.

use crate::cpus::CpuSet;
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    pub nmis: u32,
    pub wait_s: u32,
    pub cpus: Option<CpuSet>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nmis: 10_000,
            wait_s: 120,
            cpus: None,
        }
    }
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    Unknown(&'a str),
    BadValue(&'a str),
    Repeated(&'a str),
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Unknown(w) => {
                write!(
                    f,
                    "unknown word {w:?} (expected nmis=N, wait=S, cpus=A,B,...)"
                )
            }
            OptionError::BadValue(w) => write!(
                f,
                "{w:?}: the value is not a number in range (or a list of APIC IDs)"
            ),
            OptionError::Repeated(w) => write!(f, "{w:?} given twice"),
        }
    }
}

pub fn parse(cmdline: &str) -> Result<Options, OptionError<'_>> {
    let mut o = Options::default();
    let (mut nmis, mut wait) = (false, false);
    for word in cmdline.split_whitespace() {
        let (key, value) = word.split_once('=').ok_or(OptionError::Unknown(word))?;
        let (seen, slot, range) = match key {
            "nmis" => (&mut nmis, &mut o.nmis, 1..=1_000_000),
            "wait" => (&mut wait, &mut o.wait_s, 1..=3600),
            "cpus" => {
                if o.cpus.is_some() {
                    return Err(OptionError::Repeated(word));
                }
                o.cpus = Some(cpu_list(value).ok_or(OptionError::BadValue(word))?);
                continue;
            }
            _ => return Err(OptionError::Unknown(word)),
        };
        if core::mem::replace(seen, true) {
            return Err(OptionError::Repeated(word));
        }
        *slot = value
            .parse::<u32>()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or(OptionError::BadValue(word))?;
    }
    Ok(o)
}

/// `0,1,4`: at least one APIC ID, no repeats, no more than a set holds.
fn cpu_list(value: &str) -> Option<CpuSet> {
    let mut set = CpuSet::new();
    for id in value.split(',') {
        let id = id.parse::<u32>().ok()?;
        if set.contains(id) {
            return None;
        }
        set.insert(id);
    }
    (set.dropped == 0).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("").unwrap(), Options::default());
        assert_eq!(
            parse("  nmis=250   wait=30 cpus=1,0").unwrap(),
            Options {
                nmis: 250,
                wait_s: 30,
                cpus: Some(CpuSet::from([0, 1])),
            }
        );
        assert_eq!(parse("wait=5").unwrap().nmis, 10_000);
        assert_eq!(parse("wait=5").unwrap().cpus, None);
    }

    #[test]
    fn garbage_is_refused_with_the_word() {
        assert_eq!(parse("nmi=5"), Err(OptionError::Unknown("nmi=5")));
        assert_eq!(parse("fast"), Err(OptionError::Unknown("fast")));
        assert_eq!(parse("nmis=0"), Err(OptionError::BadValue("nmis=0")));
        assert_eq!(parse("nmis=-1"), Err(OptionError::BadValue("nmis=-1")));
        assert_eq!(parse("nmis=1e3"), Err(OptionError::BadValue("nmis=1e3")));
        assert_eq!(
            parse("nmis=99999999999"),
            Err(OptionError::BadValue("nmis=99999999999"))
        );
        assert_eq!(parse("wait=3601"), Err(OptionError::BadValue("wait=3601")));
        assert_eq!(parse("wait="), Err(OptionError::BadValue("wait=")));
        assert_eq!(parse("nmis=1 nmis=2"), Err(OptionError::Repeated("nmis=2")));
        for bad in [
            "cpus=",
            "cpus=0,",
            "cpus=0,,1",
            "cpus=0,0",
            "cpus=a",
            "cpus=-1",
        ] {
            assert_eq!(parse(bad), Err(OptionError::BadValue(bad)), "{bad}");
        }
        assert_eq!(parse("cpus=0 cpus=1"), Err(OptionError::Repeated("cpus=1")));
        let text = parse("x=1").unwrap_err().to_string();
        assert!(
            text.contains("\"x=1\"") && text.contains("nmis=N"),
            "{text}"
        );
    }
}
