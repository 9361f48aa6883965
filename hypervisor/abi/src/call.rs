//! Register calling convention and validation of register arguments.
//!
//! The guest puts the call number in RAX and up to six arguments in RDI,
//! RSI, RDX, R10, R8, R9 (the Linux system-call order), then executes the
//! transport instruction. The hypervisor answers a [`Status`] in RAX and a
//! value in RDX (what it means is per call; 0 when a call defines none); it
//! changes no other guest register. Unused argument registers must be zero.

use crate::numbers::Hypercall;
use crate::ring::MAX_CAPACITY;
use crate::status::Status;
use crate::version::AbiVersion;

/// Most bytes one `console_write` takes.
pub const CONSOLE_WRITE_MAX: u32 = 4096;
/// Largest buffer `partition_info` accepts (longer buffers are not an error
/// for the guest to worry about: it passes at most this).
pub const PARTITION_INFO_MAX: u32 = 4096;
/// Required alignment of the `partition_info` buffer.
pub const PARTITION_INFO_ALIGN: u64 = 8;
/// Largest buffer `partition_stats` accepts; its buffer has the same
/// alignment rule as `partition_info`'s.
pub const PARTITION_STATS_MAX: u32 = 4096;

/// Most bytes one `partition_load` copies (1 MiB: the caller's CPU is held for the copy).
pub const PARTITION_LOAD_MAX: u32 = 1 << 20;

/// The registers of a call: `number` is RAX, `args` are RDI, RSI, RDX, R10, R8, R9.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallArgs {
    pub number: u64,
    pub args: [u64; 6],
}

impl HypercallArgs {
    /// Collect the call registers in ABI order.
    pub const fn from_registers(
        rax: u64,
        rdi: u64,
        rsi: u64,
        rdx: u64,
        r10: u64,
        r8: u64,
        r9: u64,
    ) -> HypercallArgs {
        HypercallArgs {
            number: rax,
            args: [rdi, rsi, rdx, r10, r8, r9],
        }
    }

    /// Validate into a typed request (see [`decode`]).
    pub fn decode(&self) -> Result<Request, Status> {
        decode(self.number, &self.args)
    }
}

/// A validated call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `version(guest_version)`: RDI = 0 (query only) or the guest's packed
    /// version; answers RDX = the hypervisor's packed version, and
    /// `VersionMismatch` when the majors differ.
    Version { guest: Option<AbiVersion> },
    /// `console_write(gpa, len)`: RDI = guest-physical address of the bytes,
    /// RSI = length (0..=4096). Answers RDX = bytes written.
    ConsoleWrite { gpa: u64, len: u32 },
    /// `partition_info(gpa, len)`: RDI = 8-byte aligned guest-physical address
    /// of a buffer, RSI = its length (1..=4096). The hypervisor writes a
    /// [`crate::ring::PartitionInfo`] there and answers RDX = its length
    /// (`BufferTooSmall` with RDX = the length needed when it does not fit).
    PartitionInfo { gpa: u64, len: u32 },
    /// `partition_stats(gpa, len)` (since 1.2): the same registers and rules as
    /// `partition_info`; the hypervisor writes a [`crate::ring::PartitionStats`]
    /// (the partition's exit and hypercall counters, all its CPUs summed).
    PartitionStats { gpa: u64, len: u32 },
    /// `yield()`: no arguments.
    Yield,
    /// `partition_exit(code)`: RDI = result code (32 bits; 0 = passed). Does
    /// not return when accepted.
    PartitionExit { code: u32 },
    /// `partition_describe(id, gpa, len)` (since 1.5): RDI = a partition's id (its index in
    /// the policy), RSI/RDX = a buffer as for `partition_info`, which receives that
    /// partition's [`crate::ring::PartitionInfo`].
    PartitionDescribe { id: u32, gpa: u64, len: u32 },
    /// `partition_load(id, dst, src, len)` (since 1.5): RDI = a managed partition's id, RSI =
    /// guest-physical address in *that* partition, RDX = guest-physical address of the bytes
    /// in the caller, R10 = length (1..=[`PARTITION_LOAD_MAX`]). Answers RDX = bytes copied.
    PartitionLoad {
        id: u32,
        dst: u64,
        src: u64,
        len: u32,
    },
    /// `partition_start(id, gpa, len)` (since 1.5): RDI = a managed partition's id, RSI =
    /// 8-byte aligned guest-physical address of a [`crate::manage::StartState`] in the
    /// caller, RDX = its length ([`crate::manage::START_STATE_SIZE`]).
    PartitionStart { id: u32, gpa: u64, len: u32 },
    /// `partition_stop(id)` (since 1.5): RDI = a managed partition's id.
    PartitionStop { id: u32 },
    /// `partition_state(id)` (since 1.5): RDI = a managed partition's id; answers RDX = a
    /// [`crate::manage::StateWord`].
    PartitionState { id: u32 },
    /// An AI call: RDI = ring descriptor slot (< ring capacity). Answers the
    /// request's status and RDX = reply length (see [`crate::ring`]).
    Ring { call: Hypercall, slot: u32 },
}

impl Request {
    pub fn call(&self) -> Hypercall {
        match *self {
            Request::Version { .. } => Hypercall::Version,
            Request::ConsoleWrite { .. } => Hypercall::ConsoleWrite,
            Request::PartitionInfo { .. } => Hypercall::PartitionInfo,
            Request::PartitionStats { .. } => Hypercall::PartitionStats,
            Request::Yield => Hypercall::Yield,
            Request::PartitionExit { .. } => Hypercall::PartitionExit,
            Request::PartitionDescribe { .. } => Hypercall::PartitionDescribe,
            Request::PartitionLoad { .. } => Hypercall::PartitionLoad,
            Request::PartitionStart { .. } => Hypercall::PartitionStart,
            Request::PartitionStop { .. } => Hypercall::PartitionStop,
            Request::PartitionState { .. } => Hypercall::PartitionState,
            Request::Ring { call, .. } => call,
        }
    }

    /// The registers a guest loads to make this call.
    pub fn encode(&self) -> HypercallArgs {
        let args = match *self {
            Request::Version { guest } => [guest.map_or(0, |v| v.packed() as u64), 0, 0, 0, 0, 0],
            Request::ConsoleWrite { gpa, len }
            | Request::PartitionInfo { gpa, len }
            | Request::PartitionStats { gpa, len } => [gpa, len as u64, 0, 0, 0, 0],
            Request::Yield => [0; 6],
            Request::PartitionExit { code } => [code as u64, 0, 0, 0, 0, 0],
            Request::PartitionDescribe { id, gpa, len }
            | Request::PartitionStart { id, gpa, len } => [id as u64, gpa, len as u64, 0, 0, 0],
            Request::PartitionLoad { id, dst, src, len } => [id as u64, dst, src, len as u64, 0, 0],
            Request::PartitionStop { id } | Request::PartitionState { id } => {
                [id as u64, 0, 0, 0, 0, 0]
            }
            Request::Ring { slot, .. } => [slot as u64, 0, 0, 0, 0, 0],
        };
        HypercallArgs {
            number: self.call().number(),
            args,
        }
    }
}

/// Check that every argument from index `used` on is zero.
fn reserved_zero(args: &[u64; 6], used: usize) -> Result<(), Status> {
    if args[used..].iter().all(|&a| a == 0) {
        Ok(())
    } else {
        Err(Status::InvalidArgument)
    }
}

/// `gpa .. gpa + len` must not wrap around the address space.
fn range_fits(gpa: u64, len: u64) -> Result<(), Status> {
    gpa.checked_add(len)
        .map(|_| ())
        .ok_or(Status::InvalidArgument)
}

/// RDI = an 8-byte aligned buffer of RSI = 1..=`max` bytes the hypervisor
/// writes into; nothing else.
fn out_buffer(args: &[u64; 6], max: u32) -> Result<(u64, u32), Status> {
    reserved_zero(args, 2)?;
    aligned_buffer(args[0], args[1], max)
}

/// An 8-byte aligned buffer of 1..=`max` bytes that does not wrap.
fn aligned_buffer(gpa: u64, len: u64, max: u32) -> Result<(u64, u32), Status> {
    if len == 0 || !gpa.is_multiple_of(PARTITION_INFO_ALIGN) {
        return Err(Status::InvalidArgument);
    }
    if len > max as u64 {
        return Err(Status::LimitExceeded);
    }
    range_fits(gpa, len)?;
    Ok((gpa, len as u32))
}

/// A partition id is 32 bits (`NotFound` for an id no partition has comes later, from the
/// hypervisor).
fn partition_id(arg: u64) -> Result<u32, Status> {
    u32::try_from(arg).map_err(|_| Status::InvalidArgument)
}

/// Validate a call's registers into a [`Request`].
///
/// `InvalidCall` for an unassigned number; `InvalidArgument` for a reserved
/// argument not zero, misalignment, or a wrapping address range;
/// `LimitExceeded` for a length above its documented maximum. Whether an
/// address lies in the partition's memory, and whether the policy permits the
/// call, are checked by the hypervisor afterwards.
pub fn decode(number: u64, args: &[u64; 6]) -> Result<Request, Status> {
    let call = Hypercall::from_number(number).ok_or(Status::InvalidCall)?;
    let request = match call {
        Hypercall::Version => {
            reserved_zero(args, 1)?;
            let packed = u32::try_from(args[0]).map_err(|_| Status::InvalidArgument)?;
            Request::Version {
                guest: (packed != 0).then(|| AbiVersion::from_packed(packed)),
            }
        }
        Hypercall::ConsoleWrite => {
            reserved_zero(args, 2)?;
            let (gpa, len) = (args[0], args[1]);
            if len > CONSOLE_WRITE_MAX as u64 {
                return Err(Status::LimitExceeded);
            }
            range_fits(gpa, len)?;
            Request::ConsoleWrite {
                gpa,
                len: len as u32,
            }
        }
        Hypercall::PartitionInfo => {
            let (gpa, len) = out_buffer(args, PARTITION_INFO_MAX)?;
            Request::PartitionInfo { gpa, len }
        }
        Hypercall::PartitionStats => {
            let (gpa, len) = out_buffer(args, PARTITION_STATS_MAX)?;
            Request::PartitionStats { gpa, len }
        }
        Hypercall::Yield => {
            reserved_zero(args, 0)?;
            Request::Yield
        }
        Hypercall::PartitionExit => {
            reserved_zero(args, 1)?;
            let code = u32::try_from(args[0]).map_err(|_| Status::InvalidArgument)?;
            Request::PartitionExit { code }
        }
        Hypercall::PartitionDescribe => {
            reserved_zero(args, 3)?;
            let id = partition_id(args[0])?;
            let (gpa, len) = aligned_buffer(args[1], args[2], PARTITION_INFO_MAX)?;
            Request::PartitionDescribe { id, gpa, len }
        }
        Hypercall::PartitionLoad => {
            reserved_zero(args, 4)?;
            let id = partition_id(args[0])?;
            let (dst, src, len) = (args[1], args[2], args[3]);
            if len == 0 {
                return Err(Status::InvalidArgument);
            }
            if len > PARTITION_LOAD_MAX as u64 {
                return Err(Status::LimitExceeded);
            }
            range_fits(dst, len)?;
            range_fits(src, len)?;
            Request::PartitionLoad {
                id,
                dst,
                src,
                len: len as u32,
            }
        }
        Hypercall::PartitionStart => {
            reserved_zero(args, 3)?;
            let id = partition_id(args[0])?;
            if args[2] != crate::manage::START_STATE_SIZE as u64 {
                return Err(Status::InvalidArgument);
            }
            let (gpa, len) = aligned_buffer(args[1], args[2], PARTITION_INFO_MAX)?;
            Request::PartitionStart { id, gpa, len }
        }
        Hypercall::PartitionStop => {
            reserved_zero(args, 1)?;
            Request::PartitionStop {
                id: partition_id(args[0])?,
            }
        }
        Hypercall::PartitionState => {
            reserved_zero(args, 1)?;
            Request::PartitionState {
                id: partition_id(args[0])?,
            }
        }
        _ => {
            reserved_zero(args, 1)?;
            if args[0] >= MAX_CAPACITY as u64 {
                return Err(Status::InvalidArgument);
            }
            Request::Ring {
                call,
                slot: args[0] as u32,
            }
        }
    };
    Ok(request)
}

/// What the hypervisor answers: `status` in RAX, `value` in RDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub value: u64,
}

impl Reply {
    pub const fn ok(value: u64) -> Reply {
        Reply {
            status: Status::Success,
            value,
        }
    }

    /// A failure with no value.
    pub const fn err(status: Status) -> Reply {
        Reply { status, value: 0 }
    }

    /// `(rax, rdx)`.
    pub const fn registers(self) -> (u64, u64) {
        (self.status.raw(), self.value)
    }

    pub const fn from_registers(rax: u64, rdx: u64) -> Reply {
        Reply {
            status: Status::from_raw(rax),
            value: rdx,
        }
    }

    /// `Ok(value)` on success, `Err(status)` otherwise.
    pub const fn result(self) -> Result<u64, Status> {
        match self.status {
            Status::Success => Ok(self.value),
            e => Err(e),
        }
    }
}

impl From<Result<u64, Status>> for Reply {
    fn from(r: Result<u64, Status>) -> Reply {
        match r {
            Ok(v) => Reply::ok(v),
            Err(s) => Reply::err(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One valid request of every call, with non-trivial values.
    fn every_request() -> Vec<Request> {
        let mut v = vec![
            Request::Version { guest: None },
            Request::Version {
                guest: Some(AbiVersion::new(1, 3)),
            },
            Request::ConsoleWrite {
                gpa: 0x1234_5678,
                len: 4096,
            },
            Request::ConsoleWrite { gpa: 7, len: 0 },
            Request::PartitionInfo {
                gpa: 0x20_0000,
                len: 512,
            },
            Request::PartitionStats {
                gpa: 0x30_0008,
                len: 4096,
            },
            Request::Yield,
            Request::PartitionExit { code: 0 },
            Request::PartitionExit { code: u32::MAX },
            Request::PartitionDescribe {
                id: 3,
                gpa: 0x20_0000,
                len: 4096,
            },
            Request::PartitionLoad {
                id: 1,
                dst: 0x8000_0000,
                src: 0x1000,
                len: PARTITION_LOAD_MAX,
            },
            Request::PartitionStart {
                id: 2,
                gpa: 0x5000,
                len: crate::manage::START_STATE_SIZE as u32,
            },
            Request::PartitionStop { id: u32::MAX },
            Request::PartitionState { id: 0 },
        ];
        for (i, call) in Hypercall::ALL
            .into_iter()
            .filter(|c| c.uses_ring())
            .enumerate()
        {
            v.push(Request::Ring {
                call,
                slot: i as u32 % MAX_CAPACITY,
            });
        }
        v
    }

    #[test]
    fn every_request_round_trips_through_registers() {
        let all = every_request();
        for call in Hypercall::ALL {
            assert!(all.iter().any(|r| r.call() == call), "{call} not covered");
        }
        for r in all {
            let regs = r.encode();
            assert_eq!(regs.number, r.call().number());
            assert_eq!(regs.decode(), Ok(r), "{r:?}");
        }
    }

    #[test]
    fn unknown_numbers_are_invalid_call() {
        for n in [0, 7, 399, 404, 600, u64::MAX] {
            assert_eq!(decode(n, &[0; 6]), Err(Status::InvalidCall));
        }
    }

    #[test]
    fn every_reserved_argument_must_be_zero() {
        for r in every_request() {
            let regs = r.encode();
            let used = match r {
                Request::Yield => 0,
                Request::ConsoleWrite { .. }
                | Request::PartitionInfo { .. }
                | Request::PartitionStats { .. } => 2,
                Request::PartitionDescribe { .. } | Request::PartitionStart { .. } => 3,
                Request::PartitionLoad { .. } => 4,
                _ => 1,
            };
            for i in used..6 {
                let mut args = regs.args;
                args[i] = 1;
                assert_eq!(
                    decode(regs.number, &args),
                    Err(Status::InvalidArgument),
                    "{r:?} arg {i}"
                );
            }
        }
    }

    #[test]
    fn console_write_limits() {
        let n = Hypercall::ConsoleWrite.number();
        assert_eq!(
            decode(n, &[0x1000, 4097, 0, 0, 0, 0]),
            Err(Status::LimitExceeded)
        );
        assert_eq!(
            decode(n, &[u64::MAX - 10, 11, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert!(decode(n, &[u64::MAX - 10, 10, 0, 0, 0, 0]).is_ok());
    }

    #[test]
    fn partition_info_and_stats_limits() {
        for call in [Hypercall::PartitionInfo, Hypercall::PartitionStats] {
            let n = call.number();
            assert_eq!(
                decode(n, &[0x1004, 64, 0, 0, 0, 0]),
                Err(Status::InvalidArgument),
                "{call}: misaligned"
            );
            assert_eq!(
                decode(n, &[0x1000, 0, 0, 0, 0, 0]),
                Err(Status::InvalidArgument),
                "{call}: empty"
            );
            assert_eq!(
                decode(n, &[0x1000, 4097, 0, 0, 0, 0]),
                Err(Status::LimitExceeded),
                "{call}: too long"
            );
            assert_eq!(
                decode(n, &[u64::MAX - 7, 64, 0, 0, 0, 0]),
                Err(Status::InvalidArgument),
                "{call}: wraps"
            );
            assert!(decode(n, &[0x1000, 4096, 0, 0, 0, 0]).is_ok(), "{call}");
        }
    }

    #[test]
    fn scalar_arguments_are_range_checked() {
        let exit = Hypercall::PartitionExit.number();
        assert_eq!(
            decode(exit, &[1 << 32, 0, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        let version = Hypercall::Version.number();
        assert_eq!(
            decode(version, &[1 << 32, 0, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        let load = Hypercall::AiModelLoad.number();
        assert_eq!(
            decode(load, &[MAX_CAPACITY as u64, 0, 0, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            decode(load, &[MAX_CAPACITY as u64 - 1, 0, 0, 0, 0, 0]),
            Ok(Request::Ring {
                call: Hypercall::AiModelLoad,
                slot: MAX_CAPACITY - 1
            })
        );
    }

    /// 1.5's management calls: ids are 32 bits, buffers aligned and bounded, a load is
    /// 1..=1 MiB and neither of its ranges wraps, a start state has exactly its size.
    #[test]
    fn management_arguments_are_checked() {
        for call in Hypercall::ALL
            .into_iter()
            .filter(|c| c.group() == crate::Group::Management)
        {
            let mut args = [0u64; 6];
            args[0] = 1 << 32;
            assert_eq!(
                decode(call.number(), &args),
                Err(Status::InvalidArgument),
                "{call}: a 33-bit id"
            );
        }
        let load = Hypercall::PartitionLoad.number();
        let max = PARTITION_LOAD_MAX as u64;
        assert_eq!(
            decode(load, &[1, 0, 0x1000, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            decode(load, &[1, 0, 0x1000, max + 1, 0, 0]),
            Err(Status::LimitExceeded)
        );
        assert_eq!(
            decode(load, &[1, u64::MAX - 10, 0x1000, 11, 0, 0]),
            Err(Status::InvalidArgument),
            "destination wraps"
        );
        assert_eq!(
            decode(load, &[1, 0, u64::MAX - 10, 11, 0, 0]),
            Err(Status::InvalidArgument),
            "source wraps"
        );
        assert!(decode(load, &[1, 0, u64::MAX - 10, 10, 0, 0]).is_ok());
        let start = Hypercall::PartitionStart.number();
        let size = crate::manage::START_STATE_SIZE as u64;
        assert_eq!(
            decode(start, &[1, 0x1004, size, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
        for len in [0, size - 8, size + 8] {
            assert_eq!(
                decode(start, &[1, 0x1000, len, 0, 0, 0]),
                Err(Status::InvalidArgument),
                "start state of {len} bytes"
            );
        }
        let describe = Hypercall::PartitionDescribe.number();
        assert_eq!(
            decode(describe, &[1, 0x1000, 4097, 0, 0, 0]),
            Err(Status::LimitExceeded)
        );
        assert_eq!(
            decode(describe, &[1, 0x1001, 64, 0, 0, 0]),
            Err(Status::InvalidArgument)
        );
    }

    #[test]
    fn registers_are_in_abi_order() {
        let r = HypercallArgs::from_registers(2, 10, 11, 12, 13, 14, 15);
        assert_eq!(r.number, 2);
        assert_eq!(r.args, [10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn reply_registers_round_trip() {
        let ok = Reply::ok(42);
        assert_eq!(ok.registers(), (0, 42));
        assert_eq!(Reply::from_registers(0, 42).result(), Ok(42));
        let e = Reply::err(Status::PermissionDenied);
        let (rax, rdx) = e.registers();
        assert_eq!(Reply::from_registers(rax, rdx), e);
        assert_eq!(Reply::from(Err(Status::Busy)).result(), Err(Status::Busy));
    }
}
