#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_abi::{decode, GroupSet, Hypercall, Status};

// The hypercall decoder, as the hypervisor runs it on every VMCALL/VMMCALL: the first 56
// bytes are RAX (the number) and RDI, RSI, RDX, R10, R8, R9, little-endian (missing bytes 0).
// It must never panic, refuse only with the statuses the ABI lists for decoding, refuse
// every unassigned number with InvalidCall, and re-encode what it accepts to the same
// registers.
fuzz_target!(|data: &[u8]| {
    let mut regs = [0u64; 7];
    for (i, chunk) in data.chunks(8).take(7).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        regs[i] = u64::from_le_bytes(b);
    }
    // Small numbers reach the assigned calls: fold the number into 0..1024 when the input's
    // first byte says so, so the fuzzer spends its time past the number check.
    let number = if data.first().is_some_and(|b| b & 1 == 0) {
        regs[0] % 1024
    } else {
        regs[0]
    };
    let args = [regs[1], regs[2], regs[3], regs[4], regs[5], regs[6]];
    match decode(number, &args) {
        Ok(req) => {
            let again = req.encode();
            assert_eq!(again.number, number);
            assert_eq!(again.args, args);
            assert_eq!(req.call().number(), number);
            // The permission check the dispatcher makes next is total too.
            let _ = GroupSet::ALL.permits(req.call());
            let _ = GroupSet::EMPTY.permits(req.call());
        }
        Err(status) => {
            assert!(
                matches!(
                    status,
                    Status::InvalidCall | Status::InvalidArgument | Status::LimitExceeded
                ),
                "{status:?}"
            );
            if Hypercall::from_number(number).is_none() {
                assert_eq!(status, Status::InvalidCall);
            }
        }
    }
});
