//! The data of the management calls (since 1.5): the start state a manager hands to
//! `partition_start`, and the state word `partition_state` answers.
//!
//! A *managed* partition is one the policy does not start at boot (role `ai` or
//! `containers`): its memory and CPUs are set aside, and a partition holding the
//! `management` group loads it (`partition_load`), starts it (`partition_start`), stops it
//! (`partition_stop`) and watches it (`partition_state`). See `docs/abi.md`, section 9.

use crate::status::Status;

/// Bytes of a [`StartState`] in guest memory.
pub const START_STATE_SIZE: usize = 64;
/// The only [`StartState`] version so far.
pub const START_STATE_VERSION: u32 = 1;

/// How a managed partition's first CPU starts: 64-bit mode, CPL 0, paging on with `cr3`,
/// interrupts off, `rip`, `rsp` and `rsi` as given (RSI carries Linux's `boot_params`),
/// every other general register zero. CS holds `code_selector` as a flat 64-bit code
/// segment, DS/ES/SS/FS/GS `data_selector` as flat data; GDTR is `gdt_base`/`gdt_limit`,
/// whose descriptors the guest's next segment load reads (Linux's 64-bit boot protocol
/// asks for `__BOOT_CS` 0x10 and `__BOOT_DS` 0x18). The partition's other CPUs wait for
/// INIT and start-up IPIs from it.
///
/// Layout (little endian): `u32 version` (1), `u32 flags` (0), `rip`, `rsp`, `rsi`, `cr3`,
/// `gdt_base` (u64 each), `u16 gdt_limit`, `u16 code_selector`, `u16 data_selector`,
/// `u16` reserved, `u64` reserved; reserved fields are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartState {
    pub rip: u64,
    pub rsp: u64,
    pub rsi: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub code_selector: u16,
    pub data_selector: u16,
}

impl StartState {
    pub fn encode(&self) -> [u8; START_STATE_SIZE] {
        let mut b = [0u8; START_STATE_SIZE];
        b[0..4].copy_from_slice(&START_STATE_VERSION.to_le_bytes());
        for (i, v) in [self.rip, self.rsp, self.rsi, self.cr3, self.gdt_base]
            .into_iter()
            .enumerate()
        {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[48..50].copy_from_slice(&self.gdt_limit.to_le_bytes());
        b[50..52].copy_from_slice(&self.code_selector.to_le_bytes());
        b[52..54].copy_from_slice(&self.data_selector.to_le_bytes());
        b
    }

    /// Decode and check what does not depend on the target partition: the version
    /// (`VersionMismatch`), reserved fields, canonical `rip`/`rsp`, a 4 KiB aligned `cr3`, a
    /// GDT that does not wrap and selectors that are GDT entries (index not 0, TI 0, RPL 0)
    /// inside its limit (`InvalidArgument`). Whether `cr3` and the GDT lie in the target's
    /// memory is the hypervisor's check (`BadAddress`).
    pub fn decode(b: &[u8]) -> Result<StartState, Status> {
        if b.len() != START_STATE_SIZE {
            return Err(Status::InvalidArgument);
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let version = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if version != START_STATE_VERSION {
            return Err(Status::VersionMismatch);
        }
        let flags = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if flags != 0 || u16_at(54) != 0 || u64_at(56) != 0 {
            return Err(Status::InvalidArgument);
        }
        let s = StartState {
            rip: u64_at(8),
            rsp: u64_at(16),
            rsi: u64_at(24),
            cr3: u64_at(32),
            gdt_base: u64_at(40),
            gdt_limit: u16_at(48),
            code_selector: u16_at(50),
            data_selector: u16_at(52),
        };
        let selector_ok =
            |sel: u16| sel & 7 == 0 && sel != 0 && sel as u32 + 7 <= s.gdt_limit as u32;
        if !canonical(s.rip)
            || !canonical(s.rsp)
            || s.cr3 & 0xfff != 0
            || s.gdt_base.checked_add(s.gdt_limit as u64).is_none()
            || !selector_ok(s.code_selector)
            || !selector_ok(s.data_selector)
        {
            return Err(Status::InvalidArgument);
        }
        Ok(s)
    }
}

/// A 48-bit canonical address (bits 63:47 all equal).
const fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// Where a managed partition is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Not running: it may be loaded and started.
    Stopped = 1,
    /// Its CPUs run it.
    Running = 2,
    /// `partition_stop` (or its own end) was seen; its CPUs are leaving it.
    Stopping = 3,
}

/// How a managed partition's last run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LastStop {
    /// It has not run yet (or still runs for the first time).
    None = 0,
    /// It called `partition_exit`; the code is in the state word.
    Exited = 1,
    /// A manager stopped it.
    Stopped = 2,
    /// The hypervisor stopped it: a fault, a forbidden access, a triple fault (its log
    /// says which).
    Faulted = 3,
}

/// `partition_state`'s answer in RDX: bits 7:0 the [`RunState`], 15:8 the [`LastStop`],
/// 31:16 how many times it was started (wrapping), 63:32 the code of its last
/// `partition_exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateWord {
    pub state: RunState,
    pub last: LastStop,
    pub starts: u16,
    pub exit_code: u32,
}

impl StateWord {
    pub const fn packed(self) -> u64 {
        self.state as u64
            | (self.last as u64) << 8
            | (self.starts as u64) << 16
            | (self.exit_code as u64) << 32
    }

    /// `None` for a word no hypervisor sends (an unknown state or stop kind).
    pub const fn from_packed(w: u64) -> Option<StateWord> {
        let state = match w as u8 {
            1 => RunState::Stopped,
            2 => RunState::Running,
            3 => RunState::Stopping,
            _ => return None,
        };
        let last = match (w >> 8) as u8 {
            0 => LastStop::None,
            1 => LastStop::Exited,
            2 => LastStop::Stopped,
            3 => LastStop::Faulted,
            _ => return None,
        };
        Some(StateWord {
            state,
            last,
            starts: (w >> 16) as u16,
            exit_code: (w >> 32) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_like() -> StartState {
        StartState {
            rip: 0x100_0200,
            rsp: 0x8ff0,
            rsi: 0x7000,
            cr3: 0x9000,
            gdt_base: 0x500,
            gdt_limit: 0x1f,
            code_selector: 0x10,
            data_selector: 0x18,
        }
    }

    #[test]
    fn a_start_state_round_trips() {
        let s = linux_like();
        assert_eq!(StartState::decode(&s.encode()), Ok(s));
        let high = StartState {
            rip: 0xffff_8000_0000_0000,
            ..s
        };
        assert_eq!(StartState::decode(&high.encode()), Ok(high));
    }

    #[test]
    fn malformed_start_states_are_refused() {
        let good = linux_like().encode();
        let with = |f: &dyn Fn(&mut [u8; START_STATE_SIZE])| {
            let mut b = good;
            f(&mut b);
            StartState::decode(&b)
        };
        assert_eq!(with(&|b| b[0] = 2), Err(Status::VersionMismatch));
        for (what, at) in [("flags", 4), ("reserved u16", 54), ("reserved u64", 63)] {
            assert_eq!(with(&|b| b[at] = 1), Err(Status::InvalidArgument), "{what}");
        }
        let bad = |s: StartState| StartState::decode(&s.encode());
        let s = linux_like();
        for (what, st) in [
            ("rip not canonical", StartState { rip: 1 << 47, ..s }),
            (
                "rsp not canonical",
                StartState {
                    rsp: 0x8000_0000_0000_0000,
                    ..s
                },
            ),
            ("cr3 misaligned", StartState { cr3: 0x9008, ..s }),
            (
                "GDT wraps",
                StartState {
                    gdt_base: u64::MAX - 4,
                    ..s
                },
            ),
            (
                "null code selector",
                StartState {
                    code_selector: 0,
                    ..s
                },
            ),
            (
                "LDT selector",
                StartState {
                    code_selector: 0x14,
                    ..s
                },
            ),
            (
                "RPL 3",
                StartState {
                    data_selector: 0x1b,
                    ..s
                },
            ),
            (
                "beyond the limit",
                StartState {
                    data_selector: 0x20,
                    ..s
                },
            ),
        ] {
            assert_eq!(bad(st), Err(Status::InvalidArgument), "{what}");
        }
        assert_eq!(
            StartState::decode(&good[..63]),
            Err(Status::InvalidArgument)
        );
    }

    #[test]
    fn state_words_round_trip_and_unknown_ones_are_refused() {
        let w = StateWord {
            state: RunState::Stopped,
            last: LastStop::Exited,
            starts: 10,
            exit_code: 0x600d,
        };
        assert_eq!(w.packed(), 0x600d_000a_0101);
        assert_eq!(StateWord::from_packed(w.packed()), Some(w));
        assert_eq!(StateWord::from_packed(0), None);
        assert_eq!(StateWord::from_packed(4), None);
        assert_eq!(StateWord::from_packed(0x0401), None);
    }
}
