//! `nexusctl`'s command line.

use crate::Error;

pub const USAGE: &str = "\
nexusctl: NexusOS from inside a Linux guest

usage:
  nexusctl info [--cpuid-only]   what CPUID says about NexusOS and, as root with a
                                 user-space doorbell, the partition's own description
                                 (partition_info through the doorbell)
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
    Help,
    Version,
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
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (args, want) in [
            (&[][..], "no command given"),
            (&["inf"][..], "unknown command \"inf\""),
            (&["info", "--json"][..], "info: unknown option \"--json\""),
            (&["--version", "x"][..], "unknown command \"--version\""),
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
