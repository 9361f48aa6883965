//! Everything `nexusctl` can fail with, each with its own exit code (documented in
//! `nexusctl --help` and README).

use std::fmt;
use std::io;

use nexus_abi::{Hypercall, Status};

/// Exit codes: 0 success, then one per kind of failure.
pub mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 2;
    pub const NOT_NEXUS: u8 = 3;
    pub const INCOMPATIBLE: u8 = 4;
    pub const NO_DOORBELL: u8 = 5;
    pub const PERMISSION: u8 = 6;
    pub const CALL_FAILED: u8 = 7;
    pub const SYSTEM: u8 = 8;
}

#[derive(Debug)]
pub enum Error {
    /// Bad command line; the text says what and how to get help.
    Usage(String),
    /// No NexusOS signature in CPUID; `other` is the signature at 0x4000_0000 when another
    /// hypervisor's leaves are there (QEMU TCG: `TCGTCGTCGTCG`, KVM: `KVMKVMKVM`).
    NotNexus { other: Option<String> },
    /// NexusOS is there but this tool cannot talk to it (another major version, leaves it
    /// cannot parse, a reply it cannot decode).
    Incompatible { what: &'static str, status: Status },
    /// The partition's CPUID leaves announce no user-space doorbell.
    NoDoorbell,
    /// The kernel refused what only root may do: `/dev/mem`, or frame numbers in pagemap.
    Permission { what: String, source: io::Error },
    /// The hypercall answered a status other than success.
    Call {
        call: Hypercall,
        status: Status,
        value: u64,
    },
    /// Any other failure of a system call.
    System { what: String, source: io::Error },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NotNexus { .. } => exit::NOT_NEXUS,
            Error::Incompatible { .. } => exit::INCOMPATIBLE,
            Error::NoDoorbell => exit::NO_DOORBELL,
            Error::Permission { .. } => exit::PERMISSION,
            Error::Call { .. } => exit::CALL_FAILED,
            Error::System { .. } => exit::SYSTEM,
        }
    }

    pub(crate) fn system(what: impl Into<String>, source: io::Error) -> Error {
        Error::System {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) => write!(f, "{text} (see `nexusctl --help`)"),
            Error::NotNexus { other: None } => f.write_str(
                "not running under NexusOS: no NexusOS signature at CPUID leaves \
                 0x40000000..=0x4000ff00",
            ),
            Error::NotNexus { other: Some(sig) } => write!(
                f,
                "not running under NexusOS: no NexusOS signature at CPUID leaves \
                 0x40000000..=0x4000ff00 (leaf 0x40000000 names hypervisor {sig:?})"
            ),
            Error::Incompatible { what, status } => {
                write!(f, "NexusOS found, but {what}: {}", status.name())
            }
            Error::NoDoorbell => f.write_str(
                "this partition has no user-space doorbell (CPUID leaf B+2 is 0): its \
                 hypercalls can only be made by the kernel",
            ),
            Error::Permission { what, source } => write!(
                f,
                "{what}: {source} (the user-space doorbell is for root only: /dev/mem needs \
                 CAP_SYS_RAWIO, pagemap frame numbers CAP_SYS_ADMIN; a kernel in lockdown \
                 mode refuses /dev/mem to everyone, and STRICT_DEVMEM refuses pages Linux \
                 counts as RAM)"
            ),
            Error::Call {
                call,
                status,
                value,
            } => write!(
                f,
                "{} answered {} (status {}, rdx {value:#x})",
                call.name(),
                status.name(),
                status.code()
            ),
            Error::System { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_own_exit_code() {
        let errors = [
            Error::Usage("x".into()),
            Error::NotNexus { other: None },
            Error::Incompatible {
                what: "x",
                status: Status::VersionMismatch,
            },
            Error::NoDoorbell,
            Error::Permission {
                what: "x".into(),
                source: io::Error::from_raw_os_error(libc::EACCES),
            },
            Error::Call {
                call: Hypercall::PartitionInfo,
                status: Status::BadAddress,
                value: 0,
            },
            Error::system("x", io::Error::from_raw_os_error(libc::ENOMEM)),
        ];
        let mut codes: Vec<u8> = errors.iter().map(Error::exit_code).collect();
        assert!(!codes.contains(&exit::OK));
        codes.dedup();
        assert_eq!(codes, [2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn messages_name_the_cause() {
        let e = Error::NotNexus {
            other: Some("TCGTCGTCGTCG".into()),
        };
        assert_eq!(
            e.to_string(),
            "not running under NexusOS: no NexusOS signature at CPUID leaves \
             0x40000000..=0x4000ff00 (leaf 0x40000000 names hypervisor \"TCGTCGTCGTCG\")"
        );
        let e = Error::Call {
            call: Hypercall::PartitionInfo,
            status: Status::PermissionDenied,
            value: 0,
        };
        assert_eq!(
            e.to_string(),
            "partition_info answered permission denied (status -3, rdx 0x0)"
        );
        let e = Error::Permission {
            what: "cannot open /dev/mem".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(
            e.to_string()
                .starts_with("cannot open /dev/mem: Permission denied (os error 13) (the user-space doorbell is for root only"),
            "{e}"
        );
    }
}
