//! CPUID discovery leaves.
//!
//! A guest finds NexusOS by looking for [`SIGNATURE`] at leaf `0x4000_0000`
//! and, failing that, at every `0x100` step up to `0x4000_ff00` (the Xen
//! convention), so a VMM may place NexusOS leaves after another hypervisor's
//! (for example KVM's own at `0x4000_0000`). With the base leaf `B` found:
//!
//! | leaf  | EAX                 | EBX                                   | ECX           | EDX                  |
//! |-------|---------------------|---------------------------------------|---------------|----------------------|
//! | B     | max leaf (`B + 2`)  | signature bytes 0..4                  | bytes 4..8    | bytes 8..12          |
//! | B + 1 | ABI version (packed)| transport: kind (7:0), port (31:16)   | [`Features`]  | [`GroupSet`] bits     |
//! | B + 2 | doorbell GPA, low   | doorbell GPA, high                    | 0             | 0                    |
//!
//! Leaf B + 2 names the MMIO doorbell: the transport itself for kind MMIO,
//! and since ABI 1.1, for kinds VMCALL and VMMCALL, a second transport that
//! privileged user space may use (0: none; see `docs/abi.md`, "The user-space
//! doorbell").
//! Everything here is pure: the hypervisor answers with [`respond`], the guest
//! parses with [`discover`] given any way to execute CPUID.

use crate::numbers::GroupSet;
use crate::status::Status;
use crate::version::AbiVersion;

/// The usual base leaf.
pub const BASE_LEAF: u32 = 0x4000_0000;
/// Distance between candidate base leaves when searching.
pub const SEARCH_STRIDE: u32 = 0x100;
/// The last candidate base leaf searched.
pub const LAST_BASE_LEAF: u32 = 0x4000_ff00;
/// Leaves NexusOS defines above its base (base + 0 ..= base + 2).
pub const LEAVES: u32 = 3;
/// The 12-byte signature in EBX, ECX, EDX of the base leaf (little-endian).
pub const SIGNATURE: [u8; 12] = *b"NexusOSNexus";

/// The four registers one CPUID leaf returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Transport kinds, the low byte of EBX in leaf B + 1.
pub mod transport_kind {
    pub const VMCALL: u8 = 1;
    pub const VMMCALL: u8 = 2;
    pub const PORT_IO: u8 = 3;
    pub const MMIO: u8 = 4;
}

/// How a guest rings the hypervisor (see `docs/abi.md`, "Transport").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Intel VT-x: the `VMCALL` instruction.
    Vmcall,
    /// AMD-V: the `VMMCALL` instruction.
    Vmmcall,
    /// A 32-bit `OUT` to this port; the third argument travels in R11.
    PortIo { port: u16 },
    /// A 32-bit store to this guest-physical address; R11 holds its mapping.
    Mmio { gpa: u64 },
}

/// Feature bits (ECX of leaf B + 1). Unknown bits are reserved and ignored by
/// guests, so minor versions can add features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features(pub u32);

impl Features {
    /// The partition has a shared-memory ring (located via `partition_info`).
    pub const RING: Features = Features(1 << 0);
    /// `console_write` reaches a console.
    pub const CONSOLE: Features = Features(1 << 1);

    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }
}

/// Required alignment of the user-space doorbell: it is a page of its own, so
/// an OS can map just that page (Linux: through `/dev/mem`).
pub const DOORBELL_ALIGN: u64 = 4096;

/// What leaves B + 1 and B + 2 describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub version: AbiVersion,
    pub transport: Transport,
    pub features: Features,
    /// The groups the calling partition's policy grants.
    pub groups: GroupSet,
    /// Since ABI 1.1: with [`Transport::Vmcall`] or [`Transport::Vmmcall`], the
    /// guest-physical address of an MMIO doorbell page (non-zero, 4 KiB
    /// aligned) that guest user space with access to physical memory may ring
    /// exactly like the [`Transport::Mmio`] transport. Always `None` with the
    /// other transports (MMIO has its address in the transport; port I/O
    /// has none); [`encode_info`] ignores it there.
    pub doorbell: Option<u64>,
}

impl Info {
    /// The doorbell address guest user space can ring, if any: the MMIO
    /// transport's own, or the second transport of a VMCALL/VMMCALL partition.
    pub const fn user_doorbell(&self) -> Option<u64> {
        match self.transport {
            Transport::Mmio { gpa } => Some(gpa),
            Transport::Vmcall | Transport::Vmmcall => self.doorbell,
            Transport::PortIo { .. } => None,
        }
    }
}

/// The result of a successful [`discover`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The base leaf where the signature was found.
    pub base: u32,
    pub info: Info,
}

fn signature_words() -> [u32; 3] {
    let s = SIGNATURE;
    [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    ]
}

/// Leaf B: maximum leaf and signature.
pub fn signature_leaf(base: u32) -> CpuidResult {
    let [ebx, ecx, edx] = signature_words();
    CpuidResult {
        eax: base.saturating_add(LEAVES - 1),
        ebx,
        ecx,
        edx,
    }
}

/// The maximum leaf if `r` (the result of leaf `base`) carries the NexusOS
/// signature and announces at least the leaves this version reads.
pub fn parse_signature_leaf(base: u32, r: CpuidResult) -> Option<u32> {
    let ours = [r.ebx, r.ecx, r.edx] == signature_words();
    let span = r.eax.checked_sub(base)?;
    (ours && (LEAVES - 1..=0xff).contains(&span)).then_some(r.eax)
}

/// Leaves B + 1 and B + 2 for `info`.
pub fn encode_info(info: &Info) -> [CpuidResult; 2] {
    let (kind, port, gpa) = match info.transport {
        Transport::Vmcall => (transport_kind::VMCALL, 0, info.doorbell.unwrap_or(0)),
        Transport::Vmmcall => (transport_kind::VMMCALL, 0, info.doorbell.unwrap_or(0)),
        Transport::PortIo { port } => (transport_kind::PORT_IO, port, 0),
        Transport::Mmio { gpa } => (transport_kind::MMIO, 0, gpa),
    };
    [
        CpuidResult {
            eax: info.version.packed(),
            ebx: kind as u32 | (port as u32) << 16,
            ecx: info.features.0,
            edx: info.groups.bits(),
        },
        CpuidResult {
            eax: gpa as u32,
            ebx: (gpa >> 32) as u32,
            ecx: 0,
            edx: 0,
        },
    ]
}

/// Parse leaves B + 1 and B + 2. Unknown transports are `Unsupported`;
/// reserved transport bits, a port/address that does not fit the transport,
/// or a VMCALL/VMMCALL doorbell that is not 4 KiB aligned are
/// `InvalidArgument`. Unknown feature and group bits are ignored.
pub fn decode_info(leaf1: CpuidResult, leaf2: CpuidResult) -> Result<Info, Status> {
    let kind = leaf1.ebx as u8;
    let reserved = (leaf1.ebx >> 8) & 0xff;
    let port = (leaf1.ebx >> 16) as u16;
    let gpa = leaf2.eax as u64 | (leaf2.ebx as u64) << 32;
    if reserved != 0 {
        return Err(Status::InvalidArgument);
    }
    let transport = match kind {
        transport_kind::VMCALL => Transport::Vmcall,
        transport_kind::VMMCALL => Transport::Vmmcall,
        transport_kind::PORT_IO => Transport::PortIo { port },
        transport_kind::MMIO => Transport::Mmio { gpa },
        _ => return Err(Status::Unsupported),
    };
    let port_ok = port == 0 || matches!(transport, Transport::PortIo { .. });
    let gpa_ok = match transport {
        Transport::Mmio { .. } => true,
        Transport::Vmcall | Transport::Vmmcall => gpa.is_multiple_of(DOORBELL_ALIGN),
        Transport::PortIo { .. } => gpa == 0,
    };
    if !port_ok || !gpa_ok {
        return Err(Status::InvalidArgument);
    }
    let doorbell = match transport {
        Transport::Vmcall | Transport::Vmmcall => (gpa != 0).then_some(gpa),
        Transport::PortIo { .. } | Transport::Mmio { .. } => None,
    };
    Ok(Info {
        version: AbiVersion::from_packed(leaf1.eax),
        transport,
        features: Features(leaf1.ecx),
        groups: GroupSet::from_bits_truncate(leaf1.edx),
        doorbell,
    })
}

/// The hypervisor's answer for `leaf` when NexusOS leaves start at `base`;
/// `None` for leaves outside `base ..= base + 2` (answer those otherwise).
pub fn respond(leaf: u32, base: u32, info: &Info) -> Option<CpuidResult> {
    let [l1, l2] = encode_info(info);
    match leaf.checked_sub(base)? {
        0 => Some(signature_leaf(base)),
        1 => Some(l1),
        2 => Some(l2),
        _ => None,
    }
}

/// The first base leaf carrying the NexusOS signature, searched as
/// [`discover`] does; `None` when the CPU shows no NexusOS leaves (tools use it
/// to tell "not NexusOS" from "NexusOS with leaves I cannot parse").
pub fn find_base(mut cpuid: impl FnMut(u32) -> CpuidResult) -> Option<u32> {
    (BASE_LEAF..=LAST_BASE_LEAF)
        .step_by(SEARCH_STRIDE as usize)
        .find(|&base| parse_signature_leaf(base, cpuid(base)).is_some())
}

/// Search for NexusOS with `cpuid` (a function executing CPUID for a leaf)
/// and parse its leaves. `Unsupported` when no signature is found (or the
/// transport kind is unknown); `VersionMismatch` when the major version
/// differs from this crate's.
pub fn discover(mut cpuid: impl FnMut(u32) -> CpuidResult) -> Result<Discovery, Status> {
    let base = find_base(&mut cpuid).ok_or(Status::Unsupported)?;
    let info = decode_info(cpuid(base + 1), cpuid(base + 2))?;
    if !info.version.compatible_with(crate::version::ABI_VERSION) {
        return Err(Status::VersionMismatch);
    }
    Ok(Discovery { base, info })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::Group;
    use crate::version::ABI_VERSION;

    fn info(transport: Transport) -> Info {
        Info {
            version: ABI_VERSION,
            transport,
            features: Features::RING.union(Features::CONSOLE),
            groups: GroupSet::EMPTY.with(Group::Models).with(Group::Management),
            doorbell: None,
        }
    }

    /// A CPU whose hypervisor leaves start at `base`, with KVM's signature at 0x4000_0000.
    fn cpu(base: u32, info: Info) -> impl FnMut(u32) -> CpuidResult {
        move |leaf| {
            if let Some(r) = respond(leaf, base, &info) {
                r
            } else if leaf == BASE_LEAF {
                CpuidResult {
                    eax: 0x4000_0001,
                    ebx: 0x4b4d_564b,
                    ecx: 0x564b_4d56,
                    edx: 0x4d,
                }
            } else {
                CpuidResult::default()
            }
        }
    }

    #[test]
    fn signature_is_twelve_bytes_in_ebx_ecx_edx() {
        let r = signature_leaf(BASE_LEAF);
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        bytes[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        bytes[8..12].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&bytes, b"NexusOSNexus");
        assert_eq!(r.eax, 0x4000_0002);
        assert_eq!(parse_signature_leaf(BASE_LEAF, r), Some(0x4000_0002));
    }

    #[test]
    fn every_transport_round_trips() {
        for t in [
            Transport::Vmcall,
            Transport::Vmmcall,
            Transport::PortIo { port: 0x510 },
            Transport::Mmio {
                gpa: 0xfee0_1000_0000,
            },
        ] {
            let [a, b] = encode_info(&info(t));
            assert_eq!(decode_info(a, b), Ok(info(t)));
        }
    }

    #[test]
    fn discover_finds_base_leaf_and_later_bases() {
        let want = info(Transport::Vmmcall);
        assert_eq!(
            discover(cpu(BASE_LEAF, want)),
            Ok(Discovery {
                base: BASE_LEAF,
                info: want
            })
        );
        let want = info(Transport::PortIo { port: 0x510 });
        assert_eq!(
            discover(cpu(0x4000_0200, want)),
            Ok(Discovery {
                base: 0x4000_0200,
                info: want
            })
        );
    }

    #[test]
    fn find_base_searches_every_stride_up_to_the_last() {
        let i = info(Transport::Vmmcall);
        assert_eq!(find_base(cpu(BASE_LEAF, i)), Some(BASE_LEAF));
        assert_eq!(find_base(cpu(LAST_BASE_LEAF, i)), Some(LAST_BASE_LEAF));
        assert_eq!(find_base(cpu(0x4000_0180, i)), None, "not on a stride");
        let mut asked = Vec::new();
        let none = find_base(|leaf| {
            asked.push(leaf);
            CpuidResult::default()
        });
        assert_eq!(none, None);
        assert_eq!(asked.len(), 256);
        assert_eq!((asked[0], asked[255]), (BASE_LEAF, LAST_BASE_LEAF));
    }

    #[test]
    fn discover_fails_without_signature_or_on_major_mismatch() {
        assert_eq!(
            discover(|_| CpuidResult::default()),
            Err(Status::Unsupported)
        );
        let mut future = info(Transport::Vmcall);
        future.version = AbiVersion::new(2, 0);
        assert_eq!(
            discover(cpu(BASE_LEAF, future)),
            Err(Status::VersionMismatch)
        );
        let mut minor = info(Transport::Vmcall);
        minor.version = AbiVersion::new(1, 9);
        assert!(discover(cpu(BASE_LEAF, minor)).is_ok());
    }

    #[test]
    fn malformed_leaves_are_rejected() {
        let mut sig = signature_leaf(BASE_LEAF);
        sig.eax = BASE_LEAF + 1; // too few leaves for this version
        assert_eq!(parse_signature_leaf(BASE_LEAF, sig), None);
        let [mut a, b] = encode_info(&info(Transport::Vmcall));
        a.ebx = 9;
        assert_eq!(decode_info(a, b), Err(Status::Unsupported));
        a.ebx = transport_kind::VMCALL as u32 | 1 << 8;
        assert_eq!(decode_info(a, b), Err(Status::InvalidArgument));
        a.ebx = transport_kind::VMCALL as u32 | 0x510 << 16;
        assert_eq!(decode_info(a, b), Err(Status::InvalidArgument));
        let [a, mut b] = encode_info(&info(Transport::PortIo { port: 0x510 }));
        b.eax = 0x1000;
        assert_eq!(decode_info(a, b), Err(Status::InvalidArgument));
        // A VMCALL/VMMCALL doorbell is a page of its own.
        for misaligned in [0x1004u32, 0x800, 1] {
            let [a, mut b] = encode_info(&info(Transport::Vmmcall));
            b.eax = 0xfed0_0000 | misaligned;
            assert_eq!(decode_info(a, b), Err(Status::InvalidArgument));
        }
    }

    #[test]
    fn vmcall_and_vmmcall_carry_an_optional_user_doorbell() {
        for t in [Transport::Vmcall, Transport::Vmmcall] {
            let mut with = info(t);
            with.doorbell = Some(0x0000_0001_fed0_0000);
            let [a, b] = encode_info(&with);
            assert_eq!((b.eax, b.ebx, b.ecx, b.edx), (0xfed0_0000, 1, 0, 0));
            assert_eq!(decode_info(a, b), Ok(with));
            assert_eq!(with.user_doorbell(), Some(0x1_fed0_0000));
            // Zero in leaf B + 2 means no doorbell: the 1.0 encoding stays valid.
            let [a, b] = encode_info(&info(t));
            assert_eq!((b.eax, b.ebx), (0, 0));
            assert_eq!(decode_info(a, b).map(|i| i.doorbell), Ok(None));
            assert_eq!(info(t).user_doorbell(), None);
            // Discovery reports it from whichever base leaf holds NexusOS.
            assert_eq!(
                discover(cpu(0x4000_0100, with)).map(|d| d.info.doorbell),
                Ok(Some(0x1_fed0_0000))
            );
            assert_eq!(
                respond(BASE_LEAF + 2, BASE_LEAF, &with),
                Some(CpuidResult {
                    eax: 0xfed0_0000,
                    ebx: 1,
                    ecx: 0,
                    edx: 0
                })
            );
        }
    }

    #[test]
    fn other_transports_ignore_the_doorbell_field() {
        // MMIO already has its address; port I/O has none: leaf B + 2 is the transport's.
        let mut mmio = info(Transport::Mmio { gpa: 0xfeb0_0000 });
        mmio.doorbell = Some(0x1000);
        let [a, b] = encode_info(&mmio);
        assert_eq!(b.eax, 0xfeb0_0000);
        let back = decode_info(a, b).unwrap();
        assert_eq!(back.doorbell, None);
        assert_eq!(back.user_doorbell(), Some(0xfeb0_0000));
        let mut port = info(Transport::PortIo { port: 0x510 });
        port.doorbell = Some(0x1000);
        let [a, b] = encode_info(&port);
        assert_eq!((b.eax, b.ebx), (0, 0));
        let back = decode_info(a, b).unwrap();
        assert_eq!((back.doorbell, back.user_doorbell()), (None, None));
    }

    #[test]
    fn respond_covers_exactly_three_leaves() {
        let i = info(Transport::Vmcall);
        assert!(respond(BASE_LEAF - 1, BASE_LEAF, &i).is_none());
        assert!(respond(BASE_LEAF + 3, BASE_LEAF, &i).is_none());
        assert_eq!(
            respond(BASE_LEAF + 1, BASE_LEAF, &i).map(|r| r.edx),
            Some(i.groups.bits())
        );
    }
}
