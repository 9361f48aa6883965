//! Status codes.
//!
//! A call answers a status in RAX: 0 for success, otherwise a small negative
//! number in two's complement (so `-2` is `0xffff_ffff_ffff_fffe`), as Linux
//! system calls do. Ring descriptors store the same code as an `i32`.

use core::fmt;

/// The outcome of a call or of a ring request.
///
/// [`Status`] doubles as the error type of every decoder in this crate; a
/// decoder never returns `Err(Status::Success)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    Success = 0,
    /// No call has this number.
    InvalidCall = -1,
    /// An argument or payload field is malformed: a reserved value not zero,
    /// misalignment, an unknown flag or enum value, arithmetic overflow,
    /// truncated or trailing payload bytes, text that is not UTF-8.
    InvalidArgument = -2,
    /// The partition's policy does not grant the call's group.
    PermissionDenied = -3,
    /// The service behind the call is not connected (no AI partition is
    /// running or it has not registered yet). Retrying later may succeed.
    ServiceUnavailable = -4,
    /// The named model, handle, tensor or container does not exist.
    NotFound = -5,
    /// Memory (system or VRAM) for the request is exhausted.
    NoMemory = -6,
    /// A documented limit was exceeded (length, count, rank, size).
    LimitExceeded = -7,
    /// The resource is in use or the operation has not finished; retry.
    Busy = -8,
    /// The shared-memory ring is malformed: bad magic, bad geometry, an
    /// index or a descriptor's offset/length outside its bounds.
    BadRing = -9,
    /// Incompatible major ABI or ring layout version.
    VersionMismatch = -10,
    /// The call is known but not provided by this hypervisor or service.
    Unsupported = -11,
    /// A guest-physical range is not inside the partition's own memory.
    BadAddress = -12,
    /// The output buffer is too small; the size needed is reported alongside.
    BufferTooSmall = -13,
    /// The object to create exists already.
    AlreadyExists = -14,
    /// The service failed for a reason of its own (details in its log).
    Internal = -15,
    /// Tensor shapes do not fit the operation (since 1.3): inner dimensions of
    /// a product, shapes that do not broadcast, an output of the wrong shape,
    /// an axis beyond the rank.
    ShapeMismatch = -16,
    /// Element types do not fit the operation (since 1.3): inputs of different
    /// types, an output of another type, an operation the type lacks.
    DTypeMismatch = -17,
    /// A code this version of the crate does not know. Never sent; produced
    /// by [`Status::from_raw`] and [`Status::from_code`] for unknown values.
    Unknown = -4095,
}

impl Status {
    pub const ALL: [Status; 19] = [
        Status::Success,
        Status::InvalidCall,
        Status::InvalidArgument,
        Status::PermissionDenied,
        Status::ServiceUnavailable,
        Status::NotFound,
        Status::NoMemory,
        Status::LimitExceeded,
        Status::Busy,
        Status::BadRing,
        Status::VersionMismatch,
        Status::Unsupported,
        Status::BadAddress,
        Status::BufferTooSmall,
        Status::AlreadyExists,
        Status::Internal,
        Status::ShapeMismatch,
        Status::DTypeMismatch,
        Status::Unknown,
    ];

    /// The code stored in ring descriptors: 0 or negative.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The value placed in RAX: the code sign-extended to 64 bits.
    pub const fn raw(self) -> u64 {
        self as i32 as i64 as u64
    }

    /// The status for a ring code; unknown codes become [`Status::Unknown`].
    pub const fn from_code(code: i32) -> Status {
        match code {
            0 => Status::Success,
            -1 => Status::InvalidCall,
            -2 => Status::InvalidArgument,
            -3 => Status::PermissionDenied,
            -4 => Status::ServiceUnavailable,
            -5 => Status::NotFound,
            -6 => Status::NoMemory,
            -7 => Status::LimitExceeded,
            -8 => Status::Busy,
            -9 => Status::BadRing,
            -10 => Status::VersionMismatch,
            -11 => Status::Unsupported,
            -12 => Status::BadAddress,
            -13 => Status::BufferTooSmall,
            -14 => Status::AlreadyExists,
            -15 => Status::Internal,
            -16 => Status::ShapeMismatch,
            -17 => Status::DTypeMismatch,
            _ => Status::Unknown,
        }
    }

    /// The status for a RAX value; total: unknown values become [`Status::Unknown`].
    pub const fn from_raw(raw: u64) -> Status {
        let signed = raw as i64;
        if signed < i32::MIN as i64 || signed > i32::MAX as i64 {
            return Status::Unknown;
        }
        Status::from_code(signed as i32)
    }

    pub const fn is_success(self) -> bool {
        matches!(self, Status::Success)
    }

    /// `Ok(())` for success, `Err(self)` otherwise.
    pub const fn result(self) -> Result<(), Status> {
        match self {
            Status::Success => Ok(()),
            e => Err(e),
        }
    }

    /// Short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::InvalidCall => "invalid call",
            Status::InvalidArgument => "invalid argument",
            Status::PermissionDenied => "permission denied",
            Status::ServiceUnavailable => "service unavailable",
            Status::NotFound => "not found",
            Status::NoMemory => "no memory",
            Status::LimitExceeded => "limit exceeded",
            Status::Busy => "busy",
            Status::BadRing => "bad ring",
            Status::VersionMismatch => "version mismatch",
            Status::Unsupported => "unsupported",
            Status::BadAddress => "bad address",
            Status::BufferTooSmall => "buffer too small",
            Status::AlreadyExists => "already exists",
            Status::Internal => "internal error",
            Status::ShapeMismatch => "shape mismatch",
            Status::DTypeMismatch => "dtype mismatch",
            Status::Unknown => "unknown status",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl From<Status> for u64 {
    fn from(s: Status) -> u64 {
        s.raw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_raw_and_code() {
        for s in Status::ALL {
            assert_eq!(Status::from_raw(s.raw()), s);
            assert_eq!(Status::from_code(s.code()), s);
        }
    }

    #[test]
    fn encoding_is_small_negative_in_rax() {
        assert_eq!(Status::Success.raw(), 0);
        assert_eq!(Status::InvalidCall.raw(), u64::MAX);
        assert_eq!(Status::InvalidArgument.raw(), 0xffff_ffff_ffff_fffe);
        assert_eq!(Status::Internal.raw(), (-15i64) as u64);
    }

    #[test]
    fn from_raw_is_total() {
        for raw in [
            1,
            2,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 40,
            (-18i64) as u64,
        ] {
            assert_eq!(Status::from_raw(raw), Status::Unknown, "{raw:#x}");
        }
        assert_eq!(Status::from_code(i32::MIN), Status::Unknown);
        assert_eq!(Status::from_code(7), Status::Unknown);
        assert_eq!(Status::from_code(-18), Status::Unknown);
        assert_eq!(Status::from_code(-16), Status::ShapeMismatch);
        assert_eq!(Status::from_code(-17), Status::DTypeMismatch);
    }

    #[test]
    fn result_and_display() {
        assert_eq!(Status::Success.result(), Ok(()));
        assert_eq!(Status::Busy.result(), Err(Status::Busy));
        assert_eq!(Status::BadRing.to_string(), "bad ring (-9)");
        let names: std::collections::HashSet<_> = Status::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Status::ALL.len());
    }
}
