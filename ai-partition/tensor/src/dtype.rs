//! Element types the service computes with, and conversions between them.

use half::{bf16, f16};
use nexus_abi::ring::DType as WireType;

use crate::error::{Result, TensorError};

/// Element types of tensors: the ABI's, less those the service does not
/// compute with (f64, i8, u8, i16, i64, bool answer `Unsupported`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
}

impl DType {
    pub const ALL: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::I32];

    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub const fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
        }
    }

    pub fn from_name(name: &str) -> Result<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                TensorError::invalid(format!(
                    "unknown dtype \"{name}\" (expected f32, f16, bf16 or i32)"
                ))
            })
    }

    pub fn from_wire(d: WireType) -> Result<DType> {
        Ok(match d {
            WireType::F32 => DType::F32,
            WireType::F16 => DType::F16,
            WireType::BF16 => DType::BF16,
            WireType::I32 => DType::I32,
            other => {
                return Err(TensorError::unsupported(format!(
                    "dtype {other:?} is not supported (f32, f16, bf16 and i32 are)"
                )))
            }
        })
    }

    pub const fn to_wire(self) -> WireType {
        match self {
            DType::F32 => WireType::F32,
            DType::F16 => WireType::F16,
            DType::BF16 => WireType::BF16,
            DType::I32 => WireType::I32,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Little-endian element bytes of `dtype` to f32 (integers convert exactly
/// up to 2^24).
pub fn to_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let n = out.len();
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4).take(n)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2).take(n)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2).take(n)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::I32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4).take(n)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
    }
}

/// f32 values to little-endian element bytes of `dtype`: f16 and bf16 round
/// to nearest even (overflow gives infinity); i32 rounds to nearest and
/// saturates, NaN becoming 0.
pub fn from_f32(dtype: DType, values: &[f32], out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        DType::I32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&(v.round() as i32).to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: DType, v: f32) -> f32 {
        let mut b = [0u8; 4];
        from_f32(d, &[v], &mut b[..d.size()]);
        let mut o = [0f32];
        to_f32(d, &b[..d.size()], &mut o);
        o[0]
    }

    #[test]
    fn conversions_round_to_nearest_even_and_saturate() {
        // f16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(round_trip(DType::F16, 1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(round_trip(DType::F16, 65504.0), 65504.0);
        assert_eq!(round_trip(DType::F16, 1e6), f32::INFINITY);
        assert_eq!(round_trip(DType::F16, -1e6), f32::NEG_INFINITY);
        assert!(round_trip(DType::F16, f32::NAN).is_nan());
        // Subnormal f16: 2^-24 is the smallest.
        assert_eq!(round_trip(DType::F16, 2f32.powi(-24)), 2f32.powi(-24));
        // bf16 keeps f32's range with 8 bits of mantissa.
        assert_eq!(round_trip(DType::BF16, 3.0e38), 3.0040553e38);
        assert_eq!(round_trip(DType::BF16, 1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_trip(DType::BF16, 1.0 + 3.0 * 2f32.powi(-8)), 1.015625);
        // i32: nearest, saturating, NaN to 0.
        assert_eq!(round_trip(DType::I32, 2.5), 3.0);
        assert_eq!(round_trip(DType::I32, -7.4), -7.0);
        assert_eq!(round_trip(DType::I32, 1e20), i32::MAX as f32);
        assert_eq!(round_trip(DType::I32, f32::NAN), 0.0);
        assert_eq!(round_trip(DType::F32, 1.0e-40), 1.0e-40);
    }

    #[test]
    fn names_and_wire_types_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Ok(d));
            assert_eq!(DType::from_wire(d.to_wire()), Ok(d));
            assert_eq!(d.size() as u64, d.to_wire().size());
        }
        assert_eq!(
            DType::from_wire(WireType::F64).unwrap_err().status,
            nexus_abi::Status::Unsupported
        );
        assert!(DType::from_name("float32").is_err());
    }
}
