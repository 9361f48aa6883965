//! Tensor calls (500–503): create, compute, transfer, stream.

use crate::ring::codec::{Payload, Reader, Writer};
use crate::ring::PAGE_SIZE;
use crate::status::Status;

/// Most dimensions of a tensor.
pub const MAX_RANK: usize = 8;
/// Largest tensor (16 GiB).
pub const MAX_TENSOR_BYTES: u64 = 16 << 30;

wire_enum! {
    /// Element type.
    pub enum DType {
        F32 = 0,
        F16 = 1,
        BF16 = 2,
        F64 = 3,
        I8 = 4,
        U8 = 5,
        I16 = 6,
        I32 = 7,
        I64 = 8,
        Bool = 9,
    }
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> u64 {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

wire_enum! {
    /// Where a tensor lives.
    pub enum Placement {
        Host = 0,
        Gpu = 1,
    }
}

/// A tensor shape: rank 0..=8, every dimension >= 1. Fixed-size, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    rank: u8,
    dims: [u64; MAX_RANK],
}

impl Shape {
    /// `LimitExceeded` above rank 8; `InvalidArgument` for a zero dimension.
    pub fn new(dims: &[u64]) -> Result<Shape, Status> {
        if dims.len() > MAX_RANK {
            return Err(Status::LimitExceeded);
        }
        if dims.contains(&0) {
            return Err(Status::InvalidArgument);
        }
        let mut shape = Shape {
            rank: dims.len() as u8,
            dims: [0; MAX_RANK],
        };
        shape.dims[..dims.len()].copy_from_slice(dims);
        Ok(shape)
    }

    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.rank as usize]
    }

    /// Element count; `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

impl<'a> Payload<'a> for Shape {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u8(self.rank);
        for &d in self.dims() {
            w.u64(d);
        }
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let rank = r.u8()? as usize;
        if rank > MAX_RANK {
            return Err(Status::LimitExceeded);
        }
        let mut dims = [0u64; MAX_RANK];
        for d in &mut dims[..rank] {
            *d = r.u64()?;
        }
        Shape::new(&dims[..rank])
    }
}

/// `tensor_create`: a tensor of `dtype` and `shape`, at most 16 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorCreateRequest {
    pub dtype: DType,
    pub shape: Shape,
    pub placement: Placement,
}

impl TensorCreateRequest {
    /// Bytes the tensor occupies; `LimitExceeded` above [`MAX_TENSOR_BYTES`].
    pub fn bytes(&self) -> Result<u64, Status> {
        self.shape
            .elements()
            .and_then(|n| n.checked_mul(self.dtype.size()))
            .filter(|&b| b <= MAX_TENSOR_BYTES)
            .ok_or(Status::LimitExceeded)
    }
}

impl<'a> Payload<'a> for TensorCreateRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.bytes()?;
        self.dtype.write(w)?;
        self.shape.write(w)?;
        self.placement.write(w)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = TensorCreateRequest {
            dtype: DType::read(r)?,
            shape: Shape::read(r)?,
            placement: Placement::read(r)?,
        };
        req.bytes()?;
        Ok(req)
    }
}

/// Reply to `tensor_create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorCreateReply {
    /// Non-zero tensor handle.
    pub tensor: u64,
    pub bytes: u64,
}

impl<'a> Payload<'a> for TensorCreateReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.tensor);
        w.u64(self.bytes);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(TensorCreateReply {
            tensor: r.u64()?,
            bytes: r.u64()?,
        })
    }
}

wire_enum! {
    /// Operations `tensor_compute` offers.
    pub enum TensorOp {
        Add = 0,
        Sub = 1,
        Mul = 2,
        MatMul = 3,
        Relu = 4,
        Softmax = 5,
        Copy = 6,
    }
}

impl TensorOp {
    /// Inputs the operation takes (1 or 2).
    pub const fn arity(self) -> usize {
        match self {
            TensorOp::Add | TensorOp::Sub | TensorOp::Mul | TensorOp::MatMul => 2,
            TensorOp::Relu | TensorOp::Softmax | TensorOp::Copy => 1,
        }
    }
}

/// `tensor_compute`: `output = op(a[, b])`. Handles are non-zero; `b` is 0
/// for unary operations. Answers a [`super::FenceReply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorComputeRequest {
    pub op: TensorOp,
    pub a: u64,
    pub b: u64,
    pub output: u64,
}

impl TensorComputeRequest {
    fn check(&self) -> Result<(), Status> {
        let b_ok = (self.b != 0) == (self.op.arity() == 2);
        if self.a == 0 || self.output == 0 || !b_ok {
            return Err(Status::InvalidArgument);
        }
        Ok(())
    }
}

impl<'a> Payload<'a> for TensorComputeRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        self.op.write(w)?;
        w.u64(self.a);
        w.u64(self.b);
        w.u64(self.output);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = TensorComputeRequest {
            op: TensorOp::read(r)?,
            a: r.u64()?,
            b: r.u64()?,
            output: r.u64()?,
        };
        req.check()?;
        Ok(req)
    }
}

wire_enum! {
    /// Direction of `tensor_transfer`.
    pub enum Direction {
        /// Ring data area into the tensor.
        ToTensor = 0,
        /// Tensor into the ring data area.
        ToRing = 1,
    }
}

/// A page-aligned span of the ring data area carrying bulk tensor bytes.
fn check_span(ring_offset: u32, len: u32) -> Result<(), Status> {
    if len == 0 || !ring_offset.is_multiple_of(PAGE_SIZE) {
        return Err(Status::InvalidArgument);
    }
    Ok(())
}

/// `tensor_transfer`: copy `len` bytes between the tensor (from byte
/// `tensor_offset`) and the ring data area at `ring_offset` (page-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorTransferRequest {
    pub tensor: u64,
    pub direction: Direction,
    pub tensor_offset: u64,
    pub ring_offset: u32,
    pub len: u32,
}

impl<'a> Payload<'a> for TensorTransferRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        check_span(self.ring_offset, self.len)?;
        w.u64(self.tensor);
        self.direction.write(w)?;
        w.u64(self.tensor_offset);
        w.u32(self.ring_offset);
        w.u32(self.len);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = TensorTransferRequest {
            tensor: r.u64()?,
            direction: Direction::read(r)?,
            tensor_offset: r.u64()?,
            ring_offset: r.u32()?,
            len: r.u32()?,
        };
        check_span(req.ring_offset, req.len)?;
        Ok(req)
    }
}

/// Reply to `tensor_transfer` and `tensor_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorDataReply {
    /// Bytes copied.
    pub bytes: u32,
    /// Tensor bytes after the copied ones (0 at the end).
    pub remaining: u64,
}

impl<'a> Payload<'a> for TensorDataReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u32(self.bytes);
        w.u64(self.remaining);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(TensorDataReply {
            bytes: r.u32()?,
            remaining: r.u64()?,
        })
    }
}

/// `tensor_stream`: read the next chunk of a tensor being produced (for
/// example generated output) from byte `tensor_offset` into the ring data
/// area at `ring_offset` (page-aligned), at most `max_len` bytes; blocks at
/// most `timeout_ms` for data to appear (`Busy` if none did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorStreamRequest {
    pub tensor: u64,
    pub tensor_offset: u64,
    pub ring_offset: u32,
    pub max_len: u32,
    pub timeout_ms: u32,
}

impl<'a> Payload<'a> for TensorStreamRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        check_span(self.ring_offset, self.max_len)?;
        w.u64(self.tensor);
        w.u64(self.tensor_offset);
        w.u32(self.ring_offset);
        w.u32(self.max_len);
        w.u32(self.timeout_ms);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = TensorStreamRequest {
            tensor: r.u64()?,
            tensor_offset: r.u64()?,
            ring_offset: r.u32()?,
            max_len: r.u32()?,
            timeout_ms: r.u32()?,
        };
        check_span(req.ring_offset, req.max_len)?;
        Ok(req)
    }
}
