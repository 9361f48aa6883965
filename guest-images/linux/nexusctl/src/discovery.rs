//! Finding NexusOS through CPUID, which every process may execute.

use nexus_abi::cpuid::{self, CpuidResult, Discovery};
use nexus_abi::Status;

use crate::Error;

/// Discovery on this CPU.
pub fn probe() -> Result<Discovery, Error> {
    probe_with(nexus_abi::guest::cpuid)
}

/// Discovery with any way of executing CPUID (tests give recorded leaves). Tells "no NexusOS
/// here" (naming another hypervisor found at 0x4000_0000) from "NexusOS, but leaves this tool
/// cannot use".
pub fn probe_with(mut cpuid: impl FnMut(u32) -> CpuidResult) -> Result<Discovery, Error> {
    match cpuid::discover(&mut cpuid) {
        Ok(found) => Ok(found),
        Err(Status::Unsupported) if cpuid::find_base(&mut cpuid).is_none() => {
            Err(Error::NotNexus {
                other: other_hypervisor(cpuid(cpuid::BASE_LEAF)),
            })
        }
        Err(Status::VersionMismatch) => Err(Error::Incompatible {
            what: "its ABI major version differs from this nexusctl's",
            status: Status::VersionMismatch,
        }),
        Err(status) => Err(Error::Incompatible {
            what: "its CPUID leaves announce a transport this nexusctl does not know or malformed values",
            status,
        }),
    }
}

/// The 12-character signature of leaf 0x4000_0000 when it is printable ASCII (another
/// hypervisor's), trailing NULs removed.
fn other_hypervisor(r: CpuidResult) -> Option<String> {
    let mut bytes = Vec::with_capacity(12);
    for word in [r.ebx, r.ecx, r.edx] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    let printable = !bytes.is_empty() && bytes.iter().all(|b| (0x20..0x7f).contains(b));
    printable.then(|| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_abi::cpuid::{respond, Features, Info, Transport, BASE_LEAF};
    use nexus_abi::{AbiVersion, GroupSet, ABI_VERSION};

    fn words(sig: &[u8; 12]) -> CpuidResult {
        let w = |i: usize| u32::from_le_bytes(sig[i..i + 4].try_into().unwrap());
        CpuidResult {
            eax: 0x4000_0001,
            ebx: w(0),
            ecx: w(4),
            edx: w(8),
        }
    }

    fn nexus(info: Info) -> impl FnMut(u32) -> CpuidResult {
        move |leaf| respond(leaf, BASE_LEAF, &info).unwrap_or_default()
    }

    fn info() -> Info {
        Info {
            version: ABI_VERSION,
            transport: Transport::Vmmcall,
            features: Features::CONSOLE,
            groups: GroupSet::ALL,
            doorbell: Some(0xfed0_0000),
        }
    }

    #[test]
    fn finds_nexusos_and_its_doorbell() {
        let found = probe_with(nexus(info())).unwrap();
        assert_eq!(found.base, BASE_LEAF);
        assert_eq!(found.info.user_doorbell(), Some(0xfed0_0000));
    }

    #[test]
    fn names_another_hypervisor_when_nexusos_is_absent() {
        let tcg = |leaf| {
            if leaf == BASE_LEAF {
                words(b"TCGTCGTCGTCG")
            } else {
                CpuidResult::default()
            }
        };
        match probe_with(tcg) {
            Err(Error::NotNexus { other }) => assert_eq!(other.as_deref(), Some("TCGTCGTCGTCG")),
            other => panic!("{other:?}"),
        }
        let kvm = |leaf| {
            if leaf == BASE_LEAF {
                words(b"KVMKVMKVM\0\0\0")
            } else {
                CpuidResult::default()
            }
        };
        match probe_with(kvm) {
            Err(Error::NotNexus { other }) => assert_eq!(other.as_deref(), Some("KVMKVMKVM")),
            other => panic!("{other:?}"),
        }
        // Bare metal: leaf 0x4000_0000 holds garbage from the highest basic leaf.
        let bare = |_| CpuidResult {
            eax: 7,
            ebx: 0x0102_0304,
            ecx: 0,
            edx: 0xffff_ffff,
        };
        assert!(matches!(
            probe_with(bare),
            Err(Error::NotNexus { other: None })
        ));
    }

    #[test]
    fn nexusos_it_cannot_use_is_not_called_absent() {
        let mut future = info();
        future.version = AbiVersion::new(ABI_VERSION.major + 1, 0);
        let e = probe_with(nexus(future)).unwrap_err();
        assert!(matches!(
            e,
            Error::Incompatible {
                status: Status::VersionMismatch,
                ..
            }
        ));
        // Unknown transport kind 9 in leaf B + 1.
        let mut leaves = nexus(info());
        let unknown = move |leaf| {
            let mut r = leaves(leaf);
            if leaf == BASE_LEAF + 1 {
                r.ebx = 9;
            }
            r
        };
        let e = probe_with(unknown).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INCOMPATIBLE, "{e}");
    }
}
