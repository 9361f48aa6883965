//! f32 matrix products through cuBLAS: one `sgemm`, one strided batched
//! `sgemm` when both operands step through their batches evenly (or are
//! broadcast whole), else one `sgemm` per batch. cuBLAS is column-major;
//! a row-major C = A B is computed as the column-major C^T = B^T A^T,
//! which reads the same memory with no transposition.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaView, CudaViewMut};

use crate::error::{Result, TensorError};
use crate::plan::MatMulPlan;
use crate::shape::contiguous_strides;

fn cublas_err(e: cudarc::cublas::result::CublasError) -> TensorError {
    TensorError::internal(format!("cuBLAS: {e}"))
}

/// The distance in elements between consecutive batches of an operand
/// whose batch strides (in whole matrices) are `strides`: `matrix` when it
/// steps through its batches in order, 0 when one matrix serves them all,
/// `None` when it does neither (a partial broadcast).
fn even_stride(strides: &[usize], batch: &[usize], matrix: usize) -> Option<i64> {
    let dense = contiguous_strides(batch);
    let axes = || (0..batch.len()).filter(|&ax| batch[ax] > 1);
    if axes().all(|ax| strides[ax] == 0) {
        Some(0)
    } else if axes().all(|ax| strides[ax] == dense[ax]) {
        i64::try_from(matrix).ok()
    } else {
        None
    }
}

/// Where batch `i` of each operand starts, in whole matrices.
fn batch_origin(mm: &MatMulPlan, i: usize) -> (usize, usize) {
    let (mut rest, mut ia, mut ib) = (i, 0, 0);
    for ax in (0..mm.batch.len()).rev() {
        let k = rest % mm.batch[ax];
        rest /= mm.batch[ax];
        ia += k * mm.a_batch[ax];
        ib += k * mm.b_batch[ax];
    }
    (ia, ib)
}

/// `c = a · b` for every batch of `mm`. `Ok(false)` when a dimension is
/// too large for cuBLAS's 32-bit sizes (the caller computes on the host).
pub fn matmul(
    blas: &CudaBlas,
    mm: &MatMulPlan,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    c: &mut CudaViewMut<'_, f32>,
) -> Result<bool> {
    let (m, k, n) = (mm.m, mm.k, mm.n);
    let batches: usize = mm.batch.iter().product();
    let fits = |v: usize| i32::try_from(v).is_ok();
    if ![m, k, n, batches].into_iter().all(fits) {
        return Ok(false);
    }
    let need_a = mm
        .batch
        .iter()
        .zip(&mm.a_batch)
        .map(|(d, s)| (d - 1) * s)
        .sum::<usize>()
        + 1;
    let need_b = mm
        .batch
        .iter()
        .zip(&mm.b_batch)
        .map(|(d, s)| (d - 1) * s)
        .sum::<usize>()
        + 1;
    if a.len() < need_a * m * k || b.len() < need_b * k * n || c.len() < batches * m * n {
        return Err(TensorError::internal(
            "matmul operands are smaller than their plan",
        ));
    }
    let gemm = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: 1.0f32,
        lda: n as i32,
        ldb: k as i32,
        beta: 0.0f32,
        ldc: n as i32,
    };
    let sa = even_stride(&mm.a_batch, &mm.batch, m * k);
    let sb = even_stride(&mm.b_batch, &mm.batch, k * n);
    match (sa, sb) {
        (Some(stride_a), Some(stride_b)) if batches > 1 => {
            let cfg = StridedBatchedConfig {
                gemm,
                batch_size: batches as i32,
                // Column-major operands: cuBLAS's A is our b, its B our a.
                stride_a: stride_b,
                stride_b: stride_a,
                stride_c: (m * n) as i64,
            };
            // SAFETY: with lda = n, ldb = k, ldc = n the call reads k x n of
            // `b` and m x k of `a` and writes m x n of `c` per batch, at the
            // strides above; the lengths were checked against the last batch.
            unsafe { blas.gemm_strided_batched(cfg, b, a, c) }.map_err(cublas_err)?;
        }
        _ => {
            for i in 0..batches {
                let (ia, ib) = batch_origin(mm, i);
                let av = a.slice(ia * m * k..(ia + 1) * m * k);
                let bv = b.slice(ib * k * n..(ib + 1) * k * n);
                let mut cv = c.slice_mut(i * m * n..(i + 1) * m * n);
                // SAFETY: each view holds exactly one matrix of its operand
                // (m x k, k x n, m x n), which is what the call reads and
                // writes with these leading dimensions.
                unsafe { blas.gemm(gemm, &bv, &av, &mut cv) }.map_err(cublas_err)?;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_step_evenly_or_are_broadcast() {
        // [2, 3] batches, dense: strides 3, 1.
        assert_eq!(even_stride(&[3, 1], &[2, 3], 20), Some(20));
        // One matrix for all batches.
        assert_eq!(even_stride(&[0, 0], &[2, 3], 20), Some(0));
        // Broadcast along one axis only: no single stride.
        assert_eq!(even_stride(&[1, 0], &[2, 3], 20), None);
        // Axes of size 1 do not matter.
        assert_eq!(even_stride(&[0, 1], &[1, 4], 6), Some(6));
        let mm = MatMulPlan {
            m: 2,
            k: 2,
            n: 2,
            batch: vec![3, 2],
            a_batch: vec![1, 0],
            b_batch: vec![0, 1],
        };
        let origins: Vec<_> = (0..6).map(|i| batch_origin(&mm, i)).collect();
        assert_eq!(origins, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
    }
}
