//! `nexusctl`: see `nexusctl --help` and the crate docs (`nexus_client`).

use std::io::Write;
use std::process::ExitCode;

use nexus_abi::Status;
use nexus_client::cli::{self, Command};
use nexus_client::doorbell::{decode_partition_info, decode_partition_stats, Doorbell};
use nexus_client::{discovery, report, Error};

/// Most partitions `partitions` asks for (as many as a policy may name).
const MAX_PARTITIONS: u32 = 64;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("nexusctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints `text` on stdout. A reader that went away (`nexusctl info | head -3`) ends the
/// program quietly with success, as `cat` would, instead of a panic.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("nexusctl: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<(), Error> {
    match cli::parse(std::env::args().skip(1))? {
        Command::Help => emit(cli::USAGE),
        Command::Version => emit(&format!("nexusctl {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Info { cpuid_only } => {
            let found = discovery::probe()?;
            emit(&report::discovery(&found));
            if !cpuid_only {
                let bell = Doorbell::open(&found)?;
                let bytes = bell.partition_info()?;
                emit(&report::partition(&decode_partition_info(&bytes)?));
            }
        }
        Command::Stats => {
            let found = discovery::probe()?;
            let bytes = Doorbell::open(&found)?.partition_stats()?;
            emit(&report::stats(&decode_partition_stats(&bytes)?));
        }
        Command::Partitions => {
            let found = discovery::probe()?;
            let bell = Doorbell::open(&found)?;
            // Ids are the policy's indices: ask from 0 until one is not found.
            let mut answers = Vec::new();
            for id in 0..MAX_PARTITIONS {
                match bell.partition_describe(id) {
                    Ok(bytes) => answers.push((bytes, bell.partition_state(id))),
                    Err(Error::Call {
                        status: Status::NotFound,
                        ..
                    }) => break,
                    Err(e) => return Err(e),
                }
            }
            let mut lines = Vec::new();
            for (bytes, state) in &answers {
                lines.push(report::PartitionLine {
                    info: decode_partition_info(bytes)?,
                    state: *state,
                });
            }
            emit(&report::partitions(&lines));
        }
        Command::ExitLoop { count } => {
            // Only under NexusOS: elsewhere CPUID may not exit at all and the figure lies.
            discovery::probe()?;
            let start = std::time::Instant::now();
            for _ in 0..count {
                std::hint::black_box(nexus_abi::guest::cpuid(nexus_abi::cpuid::BASE_LEAF));
            }
            emit(&report::exit_loop(count, start.elapsed()));
        }
    }
    Ok(())
}
