//! Shapes: validation with checked size arithmetic, row-major strides and
//! numpy broadcasting.

use nexus_abi::ring::{MAX_RANK, MAX_TENSOR_BYTES};

use crate::dtype::DType;
use crate::error::{Result, TensorError};

/// Dimensions of a tensor, row-major; rank 0..=8, every dimension >= 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// `LimitExceeded` above rank 8 or when the element count overflows;
    /// `InvalidArgument` for a zero dimension.
    pub fn new(dims: &[u64]) -> Result<Shape> {
        if dims.len() > MAX_RANK {
            return Err(TensorError::limit(format!(
                "rank {} is above the limit of {MAX_RANK}",
                dims.len()
            )));
        }
        if let Some(i) = dims.iter().position(|&d| d == 0) {
            return Err(TensorError::invalid(format!(
                "dimension {i} of {dims:?} is zero (every dimension must be at least 1)"
            )));
        }
        let mut out = Vec::with_capacity(dims.len());
        let mut n: u64 = 1;
        for &d in dims {
            n = n.checked_mul(d).ok_or_else(|| overflow(dims))?;
            out.push(usize::try_from(d).map_err(|_| overflow(dims))?);
        }
        usize::try_from(n).map_err(|_| overflow(dims))?;
        Ok(Shape(out))
    }

    pub fn from_usize(dims: &[usize]) -> Result<Shape> {
        let wide: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        Shape::new(&wide)
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Element count (checked at construction, so it cannot overflow).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Bytes of a `dtype` tensor of this shape; `LimitExceeded` above 16 GiB.
    pub fn bytes(&self, dtype: DType) -> Result<u64> {
        (self.numel() as u64)
            .checked_mul(dtype.size() as u64)
            .filter(|&b| b <= MAX_TENSOR_BYTES)
            .ok_or_else(|| {
                TensorError::limit(format!(
                    "a {dtype} tensor of shape {:?} would be larger than the 16 GiB limit",
                    self.0
                ))
            })
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        contiguous_strides(&self.0)
    }

    pub fn to_u64(&self) -> Vec<u64> {
        self.0.iter().map(|&d| d as u64).collect()
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn overflow(dims: &[u64]) -> TensorError {
    TensorError::limit(format!("the element count of shape {dims:?} overflows"))
}

pub fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The numpy broadcast of two shapes (aligned at the last axis).
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_end(a, rank - 1 - i);
        let db = dim_from_end(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(TensorError::shape(format!(
                    "shapes {a:?} and {b:?} do not broadcast (axis {i} of the result: {da} vs {db})"
                )))
            }
        };
    }
    Ok(out)
}

/// Dimension `k` counted from the last axis (0 = last); 1 past the rank.
fn dim_from_end(dims: &[usize], k: usize) -> usize {
    if k < dims.len() {
        dims[dims.len() - 1 - k]
    } else {
        1
    }
}

/// Strides (in elements) that read a contiguous tensor of shape `from` as
/// the broadcast shape `to`: 0 along broadcast axes.
pub fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(from);
    let pad = to.len() - from.len();
    (0..to.len())
        .map(|i| {
            if i < pad || from[i - pad] == 1 {
                0
            } else {
                own[i - pad]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_abi::Status;

    #[test]
    fn validation_reports_the_right_status() {
        assert_eq!(Shape::new(&[2, 3]).unwrap().numel(), 6);
        assert_eq!(Shape::new(&[]).unwrap().numel(), 1);
        assert_eq!(
            Shape::new(&[0]).unwrap_err().status,
            Status::InvalidArgument
        );
        assert_eq!(
            Shape::new(&[1; 9]).unwrap_err().status,
            Status::LimitExceeded
        );
        let huge = Shape::new(&[u64::MAX, 2]).unwrap_err();
        assert_eq!(huge.status, Status::LimitExceeded);
        assert!(huge.message.contains("overflows"), "{}", huge.message);
        // Fits usize but not the 16 GiB limit.
        let big = Shape::new(&[1 << 32, 2]).unwrap();
        assert_eq!(
            big.bytes(DType::F32).unwrap_err().status,
            Status::LimitExceeded
        );
        assert_eq!(
            Shape::new(&[1 << 32]).unwrap().bytes(DType::F32),
            Ok(16 << 30)
        );
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[4, 1, 3], &[5, 1]).unwrap(), [4, 5, 3]);
        assert_eq!(broadcast(&[], &[2, 2]).unwrap(), [2, 2]);
        let e = broadcast(&[2, 3], &[4, 3]).unwrap_err();
        assert_eq!(e.status, Status::ShapeMismatch);
        assert_eq!(broadcast_strides(&[5, 1], &[4, 5, 3]), [0, 1, 0]);
        assert_eq!(broadcast_strides(&[4, 5, 3], &[4, 5, 3]), [15, 3, 1]);
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
    }
}
