//! Events whose delivery a VM exit interrupted (SDM vol. 3 §28.2.4, "Information for VM
//! Exits That Occur During Event Delivery"): the IDT-vectoring information names the
//! interrupt, NMI or exception the CPU was delivering into the guest when the exit happened
//! (an EPT violation on the guest's stack or IDT, an exception the bitmap intercepts during
//! delivery). Unless the next entry injects it again, the guest loses it: an interrupt its
//! local APIC already moved to in-service, or an NMI. Pure: the backend reads the two fields
//! and makes the result its pending event.

/// Valid bit of the IDT-vectoring and VM-entry interruption information.
const VALID: u32 = 1 << 31;
/// Error-code-valid bit ("deliver error code" on entry).
const ERROR_VALID: u32 = 1 << 11;

/// Event types (bits 10:8).
const TYPE_EXTERNAL: u32 = 0;
const TYPE_NMI: u32 = 2;
const TYPE_HARDWARE_EXCEPTION: u32 = 3;

/// The VM-entry interruption information and error code that deliver the event the
/// IDT-vectoring fields describe, or `None` when nothing needs injecting again:
/// - no event was being delivered;
/// - a software interrupt, a privileged software exception (INT1) or a software exception
///   (INT3, INTO): the guest's RIP still points at the instruction, which runs again;
/// - a reserved type.
///
/// Bit 12 (the NMI-unblocking bit of other exits) and the reserved bits are not passed on:
/// entry refuses them.
pub fn reinjection(info: u32, error: u32) -> Option<(u32, u32)> {
    if info & VALID == 0 {
        return None;
    }
    let kind = (info >> 8) & 7;
    match kind {
        TYPE_EXTERNAL | TYPE_NMI | TYPE_HARDWARE_EXCEPTION => {
            let keep = 0xff | (7 << 8) | VALID | (info & ERROR_VALID);
            let error = if info & ERROR_VALID != 0 { error } else { 0 };
            Some((info & keep, error))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(vector: u32, kind: u32) -> u32 {
        vector | (kind << 8) | VALID
    }

    #[test]
    fn nothing_was_being_delivered() {
        assert_eq!(reinjection(0, 0), None);
        assert_eq!(reinjection(0x30, 7), None);
    }

    #[test]
    fn interrupts_nmis_and_exceptions_are_injected_again() {
        assert_eq!(reinjection(info(0xec, 0), 0), Some((info(0xec, 0), 0)));
        assert_eq!(reinjection(info(2, 2), 0), Some((info(2, 2), 0)));
        let pf = info(14, 3) | ERROR_VALID;
        assert_eq!(reinjection(pf, 2), Some((pf, 2)));
        // No error code without its valid bit; bit 12 and reserved bits are dropped.
        assert_eq!(
            reinjection(info(6, 3) | (1 << 12) | (1 << 20), 0x1234),
            Some((info(6, 3), 0))
        );
    }

    #[test]
    fn instructions_that_raised_the_event_run_again() {
        assert_eq!(reinjection(info(0x80, 4), 0), None, "INT 0x80");
        assert_eq!(reinjection(info(1, 5), 0), None, "INT1");
        assert_eq!(reinjection(info(3, 6), 0), None, "INT3");
        assert_eq!(reinjection(info(3, 7), 0), None, "reserved type");
    }
}
