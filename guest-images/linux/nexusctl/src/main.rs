//! `nexusctl`: see `nexusctl --help` and the crate docs (`nexus_client`).

use std::io::Write;
use std::process::ExitCode;

use nexus_client::cli::{self, Command};
use nexus_client::doorbell::{decode_partition_info, Doorbell};
use nexus_client::{discovery, report, Error};

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

fn run() -> Result<(), Error> {
    match cli::parse(std::env::args().skip(1))? {
        Command::Help => print!("{}", cli::USAGE),
        Command::Version => println!("nexusctl {}", env!("CARGO_PKG_VERSION")),
        Command::Info { cpuid_only } => {
            let found = discovery::probe()?;
            print!("{}", report::discovery(&found));
            if !cpuid_only {
                let bell = Doorbell::open(&found)?;
                let bytes = bell.partition_info()?;
                print!("{}", report::partition(&decode_partition_info(&bytes)?));
            }
        }
    }
    Ok(())
}
