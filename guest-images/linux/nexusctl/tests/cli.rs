//! The `nexusctl` binary on the build machine (usually not a NexusOS guest): exit codes and
//! messages as documented in `nexusctl --help`.

use std::process::{Command, Output};

fn nexusctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexusctl"))
        .args(args)
        .output()
        .expect("the nexusctl binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn info_reports_what_cpuid_says_on_this_machine() {
    use nexus_client::{discovery, Error};
    match discovery::probe() {
        // The usual build machine (bare metal, KVM, TCG): exit status 3 and the reason.
        Err(Error::NotNexus { .. }) => {
            for args in [
                &["info"][..],
                &["info", "--cpuid-only"][..],
                &["stats"][..],
                &["exit-loop", "10"][..],
            ] {
                let out = nexusctl(args);
                assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
                assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
                let err = text(&out.stderr);
                assert!(
                    err.starts_with("nexusctl: not running under NexusOS: no NexusOS signature"),
                    "{err}"
                );
            }
        }
        // Building inside a NexusOS partition: the discovery block.
        Ok(found) => {
            let out = nexusctl(&["info", "--cpuid-only"]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert!(text(&out.stdout)
                .starts_with(&format!("NexusOS found at CPUID {:#x}\n", found.base)));
        }
        Err(other) => {
            let out = nexusctl(&["info", "--cpuid-only"]);
            assert_eq!(out.status.code(), Some(i32::from(other.exit_code())));
        }
    }
}

#[test]
fn help_version_and_usage_errors() {
    let out = nexusctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("3 not running under NexusOS"));
    let out = nexusctl(&["--version"]);
    assert_eq!(
        text(&out.stdout),
        format!("nexusctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    for bad in [&[][..], &["frobnicate"][..], &["info", "--all"][..]] {
        let out = nexusctl(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(text(&out.stderr).ends_with("(see `nexusctl --help`)\n"));
    }
}

#[test]
fn a_reader_that_went_away_ends_it_quietly() {
    // `nexusctl --help | head -0`: the pipe's read end is closed before nexusctl writes.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_nexusctl"))
        .arg("--help")
        .stdout(writer)
        .output()
        .expect("the nexusctl binary runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
