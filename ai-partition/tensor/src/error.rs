//! Errors: an ABI status (what a guest sees) and a message (what an HTTP
//! client and the log see), so both surfaces report the same failure.

use std::fmt;

use nexus_abi::Status;

/// A refused or failed tensor or GPU request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorError {
    pub status: Status,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, TensorError>;

impl TensorError {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, message)
    }

    pub fn shape(message: impl Into<String>) -> Self {
        Self::new(Status::ShapeMismatch, message)
    }

    pub fn dtype(message: impl Into<String>) -> Self {
        Self::new(Status::DTypeMismatch, message)
    }

    pub fn not_found(what: &str, handle: u64) -> Self {
        Self::new(
            Status::NotFound,
            format!("no {what} with handle {handle} (never created, freed already, or another partition's)"),
        )
    }

    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(Status::LimitExceeded, message)
    }

    pub fn no_memory(message: impl Into<String>) -> Self {
        Self::new(Status::NoMemory, message)
    }

    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(Status::Busy, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Status::Unsupported, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, message)
    }
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status.name())
    }
}

impl std::error::Error for TensorError {}

impl From<Status> for TensorError {
    fn from(status: Status) -> Self {
        Self::new(status, status.name())
    }
}
