//! `nexusctl`'s command line.

use crate::Error;

pub const USAGE: &str = "\
nexusctl: NexusOS from inside a Linux guest

usage:
  nexusctl info [--cpuid-only]   what CPUID says about NexusOS and, as root with a
                                 user-space doorbell, the partition's own description
                                 (partition_info through the doorbell)
  nexusctl stats                 the partition's exit and hypercall counters, all its
                                 CPUs summed (partition_stats through the doorbell; root)
  nexusctl partitions            every partition of the policy, and the state of the
                                 managed ones (partition_describe, partition_state
                                 through the doorbell; root, a partition holding the
                                 management group)
  nexusctl exit-loop COUNT       execute CPUID (leaf 0x40000000, always a VM exit) COUNT
                                 times and print the time per exit; any user
  nexusctl --help | --version

exit status:
  0 success                      5 no user-space doorbell announced
  2 usage error                  6 refused: not root (/dev/mem, pagemap) or kernel lockdown
  3 not running under NexusOS    7 the hypercall answered an error status (named)
  4 NexusOS this tool cannot use 8 any other system error
";

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Discovery, then (unless `cpuid_only`) partition_info through the doorbell.
    Info {
        cpuid_only: bool,
    },
    /// partition_stats through the doorbell.
    Stats,
    /// partition_describe and partition_state of every partition.
    Partitions,
    /// COUNT exits by CPUID, timed.
    ExitLoop {
        count: u64,
    },
    Help,
    Version,
}

/// Most exits one `exit-loop` makes (about a minute of exits at native speed).
pub const MAX_EXIT_LOOP: u64 = 1_000_000_000;

/// A decimal count; `_` separators allowed (`2_000_000`).
fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || text.starts_with('_') {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let args: Vec<S> = args.into_iter().collect();
    let words: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    match words.as_slice() {
        [] => Err(Error::Usage("no command given".into())),
        ["-h" | "--help" | "help", ..] => Ok(Command::Help),
        ["-V" | "--version"] => Ok(Command::Version),
        ["info", rest @ ..] => {
            let mut cpuid_only = false;
            for w in rest {
                match *w {
                    "--cpuid-only" => cpuid_only = true,
                    other => return Err(Error::Usage(format!("info: unknown option {other:?}"))),
                }
            }
            Ok(Command::Info { cpuid_only })
        }
        ["stats"] => Ok(Command::Stats),
        ["stats", other, ..] => Err(Error::Usage(format!("stats: unexpected {other:?}"))),
        ["partitions"] => Ok(Command::Partitions),
        ["partitions", other, ..] => Err(Error::Usage(format!("partitions: unexpected {other:?}"))),
        ["exit-loop", count] => match parse_count(count) {
            Some(count) if (1..=MAX_EXIT_LOOP).contains(&count) => Ok(Command::ExitLoop { count }),
            _ => Err(Error::Usage(format!(
                "exit-loop: COUNT must be a number from 1 to {MAX_EXIT_LOOP}, not {count:?}"
            ))),
        },
        ["exit-loop", ..] => Err(Error::Usage("exit-loop: give one COUNT".into())),
        [other, ..] => Err(Error::Usage(format!("unknown command {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_help_and_version() {
        assert_eq!(
            parse(["info"]).unwrap(),
            Command::Info { cpuid_only: false }
        );
        assert_eq!(
            parse(["info", "--cpuid-only"]).unwrap(),
            Command::Info { cpuid_only: true }
        );
        for help in ["-h", "--help", "help"] {
            assert_eq!(parse([help]).unwrap(), Command::Help);
        }
        assert_eq!(parse(["--version"]).unwrap(), Command::Version);
        assert_eq!(parse(["stats"]).unwrap(), Command::Stats);
        assert_eq!(parse(["partitions"]).unwrap(), Command::Partitions);
        assert_eq!(
            parse(["exit-loop", "2_000_000"]).unwrap(),
            Command::ExitLoop { count: 2_000_000 }
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (args, want) in [
            (&[][..], "no command given"),
            (&["inf"][..], "unknown command \"inf\""),
            (&["info", "--json"][..], "info: unknown option \"--json\""),
            (&["--version", "x"][..], "unknown command \"--version\""),
            (&["stats", "-v"][..], "stats: unexpected \"-v\""),
            (&["partitions", "3"][..], "partitions: unexpected \"3\""),
            (&["exit-loop"][..], "exit-loop: give one COUNT"),
            (&["exit-loop", "1", "2"][..], "exit-loop: give one COUNT"),
            (
                &["exit-loop", "0"][..],
                "exit-loop: COUNT must be a number from 1 to 1000000000, not \"0\"",
            ),
            (
                &["exit-loop", "-5"][..],
                "exit-loop: COUNT must be a number from 1 to 1000000000, not \"-5\"",
            ),
            (
                &["exit-loop", "1000000001"][..],
                "exit-loop: COUNT must be a number from 1 to 1000000000, not \"1000000001\"",
            ),
            (
                &["exit-loop", "_1"][..],
                "exit-loop: COUNT must be a number from 1 to 1000000000, not \"_1\"",
            ),
        ] {
            match parse(args) {
                Err(e @ Error::Usage(_)) => {
                    assert_eq!(e.to_string(), format!("{want} (see `nexusctl --help`)"));
                    assert_eq!(e.exit_code(), 2);
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
