//! Events whose delivery a #VMEXIT interrupted (APM vol. 2 §15.7.2): EXITINTINFO names
//! the interrupt, NMI or exception the CPU was delivering into the guest when the exit
//! happened (a nested page fault on the guest's stack or IDT, an intercepted exception
//! during delivery). Unless the hypervisor injects it again, the guest loses it: an
//! interrupt its local APIC already moved to in-service, which is never acknowledged, or an
//! NMI. Pure: the backend reads EXITINTINFO and writes the result into EVENTINJ.

/// Valid bit of EXITINTINFO and EVENTINJ.
pub const VALID: u64 = 1 << 31;
/// Error-code-valid bit.
const ERROR_VALID: u64 = 1 << 11;

/// Event types (bits 10:8).
const TYPE_INTR: u64 = 0;
const TYPE_NMI: u64 = 2;
const TYPE_EXCEPTION: u64 = 3;

/// The EVENTINJ value that delivers the event EXITINTINFO `info` describes, or `None`
/// when nothing needs injecting again:
/// - no event was being delivered;
/// - a software interrupt (INTn, type 4) or the trap of INT3/INTO (#BP, #OF): the guest's
///   RIP still points at the instruction, which runs again;
/// - a reserved type.
///
/// QEMU's TCG reports an NMI or an external interrupt it was delivering as an exception
/// (type 3, vector 2 or 32..=255), which EVENTINJ would refuse in that form
/// (VMEXIT_INVALID): both are injected as what they are.
pub fn reinjection(info: u64) -> Option<u64> {
    if info & VALID == 0 {
        return None;
    }
    let vector = info & 0xff;
    let kind = (info >> 8) & 7;
    let error = info & (ERROR_VALID | (0xffff_ffff << 32));
    let event = |kind: u64, error: u64| Some(vector | (kind << 8) | VALID | error);
    match kind {
        TYPE_INTR => event(TYPE_INTR, 0),
        TYPE_NMI => event(TYPE_NMI, 0),
        TYPE_EXCEPTION => match vector {
            2 => event(TYPE_NMI, 0),
            3 | 4 => None,
            32..=255 => event(TYPE_INTR, 0),
            _ => event(
                TYPE_EXCEPTION,
                if info & ERROR_VALID != 0 { error } else { 0 },
            ),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(vector: u64, kind: u64) -> u64 {
        vector | (kind << 8) | VALID
    }

    #[test]
    fn nothing_was_being_delivered() {
        assert_eq!(reinjection(0), None);
        // A stale vector without the valid bit means nothing.
        assert_eq!(reinjection(0x30 | (3 << 8)), None);
    }

    #[test]
    fn interrupts_and_nmis_are_injected_again() {
        assert_eq!(reinjection(info(0xec, 0)), Some(info(0xec, 0)));
        assert_eq!(reinjection(info(2, 2)), Some(info(2, 2)));
    }

    #[test]
    fn qemu_reports_of_interrupts_and_nmis_as_exceptions_are_corrected() {
        assert_eq!(reinjection(info(0xec, 3)), Some(info(0xec, 0)));
        assert_eq!(reinjection(info(32, 3)), Some(info(32, 0)));
        assert_eq!(reinjection(info(2, 3)), Some(info(2, 2)));
    }

    #[test]
    fn exceptions_keep_their_error_code() {
        let pf = info(14, 3) | ERROR_VALID | (0x2u64 << 32);
        assert_eq!(reinjection(pf), Some(pf));
        // #UD has none; garbage in the error-code half is not passed on without EV.
        assert_eq!(
            reinjection(info(6, 3) | (0x1234u64 << 32)),
            Some(info(6, 3))
        );
    }

    #[test]
    fn instructions_that_raised_the_event_run_again() {
        assert_eq!(reinjection(info(0x80, 4)), None, "INT 0x80");
        assert_eq!(reinjection(info(3, 3)), None, "INT3");
        assert_eq!(reinjection(info(4, 3)), None, "INTO");
        assert_eq!(reinjection(info(1, 5)), None, "reserved type");
    }
}
