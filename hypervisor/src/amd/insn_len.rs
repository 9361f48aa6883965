//! Length of the instruction behind an SVM exit.
//!
//! With nrip-save the VMCB holds the next RIP. IOIO exits always carry it in
//! EXITINFO2. Otherwise (QEMU TCG) the guest's instruction bytes are fetched
//! and decoded with [`crate::insn`]; a fetch or decode failure gives 0 and
//! the generic handler stops the partition rather than guess.

use crate::exit::ExitReason;
use crate::insn::{self, Kind, MAX_LEN};
use crate::mem::PAGE_SIZE;

/// What the backend knows after the exit.
pub struct ExitSite {
    pub rip: u64,
    /// VMCB NRIP when the CPU has nrip-save.
    pub nrip: Option<u64>,
    pub exitinfo2: u64,
    /// 64-bit code segment (CS.L with EFER.LMA).
    pub long_mode: bool,
}

/// Decoded instruction must be the kind the exit says it was.
fn kind_matches(reason: &ExitReason, kind: Kind) -> bool {
    match reason {
        ExitReason::Hypercall => matches!(kind, Kind::Vmmcall),
        ExitReason::Cpuid => matches!(kind, Kind::Cpuid),
        ExitReason::Msr { write: false } => matches!(kind, Kind::Rdmsr),
        ExitReason::Msr { write: true } => matches!(kind, Kind::Wrmsr),
        ExitReason::Io(io) => matches!(kind, Kind::Io { string } if string == io.string),
        ExitReason::Hlt => matches!(kind, Kind::Hlt),
        ExitReason::Xsetbv => matches!(kind, Kind::Xsetbv),
        // QEMU 7.2 TCG reports INVD with WBINVD's exit code (0x89); both exits get the
        // same answer, so either instruction is accepted for either.
        ExitReason::Invd | ExitReason::Wbinvd => matches!(kind, Kind::Invd | Kind::Wbinvd),
        ExitReason::Rdpmc => matches!(kind, Kind::Rdpmc),
        ExitReason::Monitor => matches!(kind, Kind::Monitor),
        ExitReason::Mwait => matches!(kind, Kind::Mwait),
        _ => false,
    }
}

/// Length in bytes, or 0 when unknown. `fetch(linear_rip, buf)` copies guest
/// code bytes and answers how many it could read.
pub fn length(
    reason: &ExitReason,
    site: &ExitSite,
    mut fetch: impl FnMut(u64, &mut [u8]) -> usize,
) -> u8 {
    let from_next = |next: u64| match next.wrapping_sub(site.rip) {
        n @ 1..=15 => n as u8,
        _ => 0,
    };
    if let Some(nrip) = site.nrip {
        return from_next(nrip);
    }
    if let ExitReason::Io(_) = reason {
        return from_next(site.exitinfo2);
    }
    // Fetch up to the end of the page first (the next page may not be
    // mapped), then the full 15 bytes if the instruction runs on.
    let mut buf = [0u8; MAX_LEN];
    let in_page = ((PAGE_SIZE - site.rip % PAGE_SIZE) as usize).min(MAX_LEN);
    let mut got = fetch(site.rip, &mut buf[..in_page]);
    loop {
        match insn::decode(&buf[..got], site.long_mode) {
            Ok(i) if kind_matches(reason, i.kind) => return i.len,
            Err(insn::DecodeError::Truncated) if got == in_page && in_page < MAX_LEN => {
                let more = fetch(site.rip.wrapping_add(in_page as u64), &mut buf[in_page..]);
                if more == 0 {
                    return 0;
                }
                got += more;
            }
            _ => return 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{IoAccess, IoDir};

    fn site(rip: u64) -> ExitSite {
        ExitSite {
            rip,
            nrip: None,
            exitinfo2: 0,
            long_mode: true,
        }
    }

    /// Guest code at `base`, readable up to `limit` (exclusive).
    fn fetcher(base: u64, code: &[u8], limit: u64) -> impl FnMut(u64, &mut [u8]) -> usize + '_ {
        move |at, buf| {
            let mut n = 0;
            for (i, b) in buf.iter_mut().enumerate() {
                let a = at + i as u64;
                if a >= limit || a < base || (a - base) as usize >= code.len() {
                    break;
                }
                *b = code[(a - base) as usize];
                n += 1;
            }
            n
        }
    }

    #[test]
    fn uses_nrip_or_exitinfo2_when_available() {
        let mut s = site(0x1000);
        s.nrip = Some(0x1003);
        assert_eq!(
            length(&ExitReason::Hypercall, &s, |_, _| panic!("no fetch")),
            3
        );
        let io = ExitReason::Io(IoAccess {
            port: 0xf4,
            size: 4,
            dir: IoDir::Out,
            string: false,
            rep: false,
        });
        let mut s = site(0x1000);
        s.exitinfo2 = 0x1002;
        assert_eq!(length(&io, &s, |_, _| panic!("no fetch")), 2);
        s.exitinfo2 = 0x1000; // nonsense next RIP
        assert_eq!(length(&io, &s, |_, _| 0), 0);
    }

    #[test]
    fn decodes_guest_bytes_without_nrip() {
        let code = [0x0f, 0x01, 0xd9, 0x0f, 0xa2];
        assert_eq!(
            length(
                &ExitReason::Hypercall,
                &site(0x2000),
                fetcher(0x2000, &code, u64::MAX)
            ),
            3
        );
        assert_eq!(
            length(
                &ExitReason::Cpuid,
                &site(0x2003),
                fetcher(0x2000, &code, u64::MAX)
            ),
            2
        );
        // XSETBV without nrip-save (QEMU TCG): 0F 01 D1
        let xsetbv = [0x0f, 0x01, 0xd1];
        assert_eq!(
            length(
                &ExitReason::Xsetbv,
                &site(0x3000),
                fetcher(0x3000, &xsetbv, u64::MAX)
            ),
            3
        );
        // INVD under WBINVD's exit code (QEMU 7.2 TCG) is still two bytes.
        assert_eq!(
            length(
                &ExitReason::Wbinvd,
                &site(0x3000),
                fetcher(0x3000, &[0x0f, 0x08], u64::MAX)
            ),
            2
        );
        // the bytes are not what the exit says: refuse
        assert_eq!(
            length(
                &ExitReason::Cpuid,
                &site(0x2000),
                fetcher(0x2000, &code, u64::MAX)
            ),
            0
        );
    }

    #[test]
    fn instruction_crossing_a_page() {
        let code = [0x66, 0x0f, 0x01, 0xd9]; // prefix + vmmcall, starting 2 bytes before a page end
        let base = 0x2ffe;
        assert_eq!(
            length(
                &ExitReason::Hypercall,
                &site(base),
                fetcher(base, &code, u64::MAX)
            ),
            4
        );
        // next page unreadable
        assert_eq!(
            length(
                &ExitReason::Hypercall,
                &site(base),
                fetcher(base, &code, 0x3000)
            ),
            0
        );
        // nothing readable at all
        assert_eq!(length(&ExitReason::Hlt, &site(base), |_, _| 0), 0);
    }
}
