//! Tensor calls (500–506): create, compute, transfer, stream; free, op and fill since 1.3.

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

wire_enum! {
    /// Operations `tensor_op` offers (since 1.3). Codes 0–6 are the
    /// operations of `tensor_compute`, with the same meaning.
    pub enum OpCode {
        /// Elementwise, inputs broadcast (numpy rules).
        Add = 0,
        Sub = 1,
        Mul = 2,
        /// Matrix product over the last two axes, batched over the others
        /// (broadcast), as numpy's `matmul`.
        MatMul = 3,
        Relu = 4,
        /// Over the last axis.
        Softmax = 5,
        /// Same element count; converts between element types.
        Copy = 6,
        Div = 7,
        /// Over the last axis: inputs `x`, optional `gamma`, optional `beta`.
        LayerNorm = 8,
        /// Over the last axis: inputs `x`, optional `weight`.
        RmsNorm = 9,
        /// Exact (erf) GELU.
        Gelu = 10,
        Silu = 11,
        /// Permute axes (`axes` = the permutation; empty: swap the last two).
        Transpose = 12,
        /// Same elements in row-major order, the output's shape.
        Reshape = 13,
        /// Over `axes` (empty: all), kept or dropped as the output's rank says.
        Sum = 14,
        Mean = 15,
    }
}

impl OpCode {
    /// Fewest and most inputs the operation takes.
    pub const fn inputs(self) -> (usize, usize) {
        match self {
            OpCode::Add | OpCode::Sub | OpCode::Mul | OpCode::Div | OpCode::MatMul => (2, 2),
            OpCode::LayerNorm => (1, 3),
            OpCode::RmsNorm => (1, 2),
            _ => (1, 1),
        }
    }

    /// Whether `axes` means something to the operation.
    pub const fn takes_axes(self) -> bool {
        matches!(self, OpCode::Transpose | OpCode::Sum | OpCode::Mean)
    }

    /// Whether `eps` means something to the operation.
    pub const fn takes_eps(self) -> bool {
        matches!(self, OpCode::LayerNorm | OpCode::RmsNorm)
    }
}

impl From<TensorOp> for OpCode {
    fn from(op: TensorOp) -> OpCode {
        match op {
            TensorOp::Add => OpCode::Add,
            TensorOp::Sub => OpCode::Sub,
            TensorOp::Mul => OpCode::Mul,
            TensorOp::MatMul => OpCode::MatMul,
            TensorOp::Relu => OpCode::Relu,
            TensorOp::Softmax => OpCode::Softmax,
            TensorOp::Copy => OpCode::Copy,
        }
    }
}

/// Most inputs of one operation.
pub const MAX_OP_INPUTS: usize = 3;

/// A list of distinct axes (a permutation or the axes to reduce): count
/// `u8` (0..=8, else LimitExceeded), then the axes, each `u8` below 8 and
/// none twice (else InvalidArgument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Axes {
    len: u8,
    axes: [u8; MAX_RANK],
}

impl Axes {
    pub fn new(axes: &[u8]) -> Result<Axes, Status> {
        if axes.len() > MAX_RANK {
            return Err(Status::LimitExceeded);
        }
        let mut seen = 0u32;
        for &a in axes {
            if a as usize >= MAX_RANK || seen & (1 << a) != 0 {
                return Err(Status::InvalidArgument);
            }
            seen |= 1 << a;
        }
        let mut out = Axes {
            len: axes.len() as u8,
            axes: [0; MAX_RANK],
        };
        out.axes[..axes.len()].copy_from_slice(axes);
        Ok(out)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.axes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> Payload<'a> for Axes {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u8(self.len);
        for &a in self.as_slice() {
            w.u8(a);
        }
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let len = r.u8()? as usize;
        if len > MAX_RANK {
            return Err(Status::LimitExceeded);
        }
        let mut axes = [0u8; MAX_RANK];
        for a in &mut axes[..len] {
            *a = r.u8()?;
        }
        Axes::new(&axes[..len])
    }
}

/// `tensor_op` (since 1.3): `output = op(inputs…)` on `stream` of the
/// calling partition, in order after the work already queued there.
/// Answers a [`super::FenceReply`].
///
/// Wire: `op: u8`, `stream: u32`, `count: u8` then `count x u64` inputs,
/// `output: u64`, `axes` ([`Axes`]), `eps: u32` (IEEE-754 binary32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorOpRequest {
    pub op: OpCode,
    pub stream: u32,
    count: u8,
    inputs: [u64; MAX_OP_INPUTS],
    pub output: u64,
    /// For transpose, sum and mean; empty for the others.
    pub axes: Axes,
    /// Epsilon bits for layer and RMS norm (0: the default 1e-5; otherwise
    /// finite and positive); 0 for the others.
    pub eps_bits: u32,
}

impl TensorOpRequest {
    /// A request checked as the decoder checks it.
    pub fn new(
        op: OpCode,
        stream: u32,
        inputs: &[u64],
        output: u64,
        axes: Axes,
        eps: f32,
    ) -> Result<TensorOpRequest, Status> {
        if inputs.len() > MAX_OP_INPUTS {
            return Err(Status::InvalidArgument);
        }
        let mut req = TensorOpRequest {
            op,
            stream,
            count: inputs.len() as u8,
            inputs: [0; MAX_OP_INPUTS],
            output,
            axes,
            eps_bits: eps.to_bits(),
        };
        req.inputs[..inputs.len()].copy_from_slice(inputs);
        req.check()?;
        Ok(req)
    }

    pub fn inputs(&self) -> &[u64] {
        &self.inputs[..self.count as usize]
    }

    /// Epsilon for the norms: the default for 0 bits.
    pub fn eps(&self) -> f32 {
        match self.eps_bits {
            0 => 1e-5,
            bits => f32::from_bits(bits),
        }
    }

    fn check(&self) -> Result<(), Status> {
        let (min, max) = self.op.inputs();
        let n = self.count as usize;
        if n < min || n > max || self.inputs().contains(&0) || self.output == 0 {
            return Err(Status::InvalidArgument);
        }
        if !self.op.takes_axes() && !self.axes.is_empty() {
            return Err(Status::InvalidArgument);
        }
        let eps = f32::from_bits(self.eps_bits);
        let eps_ok = if self.op.takes_eps() {
            self.eps_bits == 0 || (eps.is_finite() && eps > 0.0)
        } else {
            self.eps_bits == 0
        };
        if !eps_ok {
            return Err(Status::InvalidArgument);
        }
        Ok(())
    }
}

impl<'a> Payload<'a> for TensorOpRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        self.op.write(w)?;
        w.u32(self.stream);
        w.u8(self.count);
        for &h in self.inputs() {
            w.u64(h);
        }
        w.u64(self.output);
        self.axes.write(w)?;
        w.u32(self.eps_bits);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let op = OpCode::read(r)?;
        let stream = r.u32()?;
        let count = r.u8()?;
        if count as usize > MAX_OP_INPUTS {
            return Err(Status::InvalidArgument);
        }
        let mut inputs = [0u64; MAX_OP_INPUTS];
        for h in &mut inputs[..count as usize] {
            *h = r.u64()?;
        }
        let req = TensorOpRequest {
            op,
            stream,
            count,
            inputs,
            output: r.u64()?,
            axes: Axes::read(r)?,
            eps_bits: r.u32()?,
        };
        req.check()?;
        Ok(req)
    }
}

wire_enum! {
    /// How `tensor_fill` fills a tensor (since 1.3).
    pub enum FillKind {
        /// Zeros; `seed`, `a` and `b` are 0.
        Zeros = 0,
        /// Every element `a`; `seed` and `b` are 0.
        Constant = 1,
        /// Uniform in `[a, b)` from `seed`; `a < b`.
        Uniform = 2,
        /// Normal with mean `a` and standard deviation `b >= 0` from `seed`.
        Normal = 3,
    }
}

/// `tensor_fill` (since 1.3): fill `tensor` on `stream`; answers a
/// [`super::FenceReply`]. The same seed gives the same values on every
/// backend. `a` and `b` travel as IEEE-754 binary64 bits and must be finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorFillRequest {
    pub tensor: u64,
    pub stream: u32,
    pub kind: FillKind,
    pub seed: u64,
    pub a: f64,
    pub b: f64,
}

impl TensorFillRequest {
    fn check(&self) -> Result<(), Status> {
        let zero = |v: f64| v.to_bits() == 0;
        let ok = self.tensor != 0
            && self.a.is_finite()
            && self.b.is_finite()
            && match self.kind {
                FillKind::Zeros => self.seed == 0 && zero(self.a) && zero(self.b),
                FillKind::Constant => self.seed == 0 && zero(self.b),
                FillKind::Uniform => self.a < self.b,
                FillKind::Normal => self.b >= 0.0,
            };
        if ok {
            Ok(())
        } else {
            Err(Status::InvalidArgument)
        }
    }
}

impl<'a> Payload<'a> for TensorFillRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        w.u64(self.tensor);
        w.u32(self.stream);
        self.kind.write(w)?;
        w.u64(self.seed);
        w.u64(self.a.to_bits());
        w.u64(self.b.to_bits());
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = TensorFillRequest {
            tensor: r.u64()?,
            stream: r.u32()?,
            kind: FillKind::read(r)?,
            seed: r.u64()?,
            a: f64::from_bits(r.u64()?),
            b: f64::from_bits(r.u64()?),
        };
        req.check()?;
        Ok(req)
    }
}
