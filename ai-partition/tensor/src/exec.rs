//! Running a checked [`Plan`] on host memory: element types are converted
//! at the edges (f16 and bf16 compute in f32), then the CPU kernels run.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::cpu::elementwise::{self, Operand};
use crate::cpu::{gemm, layout, norm, reduce};
use crate::dtype::{self, DType};
use crate::error::{Result, TensorError};
use crate::plan::{Kind, MatMulPlan, Plan};

/// f32 values of a host tensor: borrowed when it is f32 already.
fn floats(dtype: DType, bytes: &[u8], n: usize) -> Cow<'_, [f32]> {
    if dtype == DType::F32 {
        if let Ok(s) = bytemuck::try_cast_slice::<u8, f32>(&bytes[..n * 4]) {
            return Cow::Borrowed(s);
        }
    }
    let mut v = vec![0f32; n];
    dtype::to_f32(dtype, bytes, &mut v);
    Cow::Owned(v)
}

fn ints(bytes: &[u8], n: usize) -> Cow<'_, [i32]> {
    match bytemuck::try_cast_slice::<u8, i32>(&bytes[..n * 4]) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            bytes[..n * 4]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
    }
}

/// Write f32 results through `f` straight into an f32 output, or into a
/// scratch buffer converted afterwards.
fn with_float_out(dtype: DType, out: &mut [u8], n: usize, f: impl FnOnce(&mut [f32])) {
    if dtype == DType::F32 {
        if let Ok(o) = bytemuck::try_cast_slice_mut::<u8, f32>(&mut out[..n * 4]) {
            f(o);
            return;
        }
    }
    let mut tmp = vec![0f32; n];
    f(&mut tmp);
    dtype::from_f32(dtype, &tmp, out);
}

fn with_int_out(out: &mut [u8], n: usize, f: impl FnOnce(&mut [i32])) {
    match bytemuck::try_cast_slice_mut::<u8, i32>(&mut out[..n * 4]) {
        Ok(o) => f(o),
        Err(_) => {
            let mut tmp = vec![0i32; n];
            f(&mut tmp);
            for (c, v) in out.chunks_exact_mut(4).zip(tmp) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Run `plan` with `inputs` (each the bytes of a contiguous tensor of the
/// plan's input type and shape) into `out`, on `threads` threads of the
/// current rayon pool.
pub fn run(plan: &Plan, inputs: &[&[u8]], out: &mut [u8], threads: usize) -> Result<()> {
    let n_out = plan.out_shape.numel();
    let (dt, x_shape) = (plan.inputs[0].0, &plan.inputs[0].1);
    let n_x = x_shape.numel();
    let need = |i: usize| plan.inputs[i].1.numel() * plan.inputs[i].0.size();
    if inputs.len() != plan.inputs.len()
        || inputs.iter().enumerate().any(|(i, b)| b.len() < need(i))
        || out.len() < n_out * plan.out_dtype.size()
    {
        return Err(TensorError::internal("operand sizes do not match the plan"));
    }
    match &plan.kind {
        Kind::Binary(op) => {
            let sa = plan.operand_strides(0);
            let sb = plan.operand_strides(1);
            let dims = plan.out_shape.dims();
            if dt == DType::I32 {
                let (a, b) = (
                    ints(inputs[0], n_x),
                    ints(inputs[1], plan.inputs[1].1.numel()),
                );
                with_int_out(out, n_out, |o| {
                    let a = Operand {
                        data: &a,
                        strides: &sa,
                    };
                    let b = Operand {
                        data: &b,
                        strides: &sb,
                    };
                    elementwise::binary(*op, a, b, dims, o)
                });
            } else {
                let a = floats(dt, inputs[0], n_x);
                let b = floats(dt, inputs[1], plan.inputs[1].1.numel());
                with_float_out(dt, out, n_out, |o| {
                    let a = Operand {
                        data: &a,
                        strides: &sa,
                    };
                    let b = Operand {
                        data: &b,
                        strides: &sb,
                    };
                    elementwise::binary(*op, a, b, dims, o)
                });
            }
        }
        Kind::MatMul(mm) => {
            let n_b = plan.inputs[1].1.numel();
            if dt == DType::I32 {
                let (a, b) = (ints(inputs[0], n_x), ints(inputs[1], n_b));
                let mut ok = true;
                with_int_out(out, n_out, |o| {
                    ok = batched(
                        mm,
                        |ai, bi, c| {
                            let (m, k, n) = (mm.m, mm.k, mm.n);
                            let (a, b) = (&a[ai * m * k..][..m * k], &b[bi * k * n..][..k * n]);
                            gemm::matmul_i32(a, b, m, k, n, c);
                            true
                        },
                        o,
                        1,
                    )
                });
                if !ok {
                    return Err(TensorError::internal("matmul operands out of bounds"));
                }
            } else {
                let a = floats(dt, inputs[0], n_x);
                let b = floats(dt, inputs[1], n_b);
                let mut ok = true;
                with_float_out(dt, out, n_out, |o| {
                    ok = batched(
                        mm,
                        |ai, bi, c| {
                            let (m, k, n) = (mm.m, mm.k, mm.n);
                            let am = gemm::MatRef {
                                data: &a[ai * m * k..][..m * k],
                                rows: m,
                                cols: k,
                                row_stride: k,
                                col_stride: 1,
                            };
                            let bm = gemm::MatRef {
                                data: &b[bi * k * n..][..k * n],
                                rows: k,
                                cols: n,
                                row_stride: n,
                                col_stride: 1,
                            };
                            gemm::matmul(am, bm, c, threads_for(mm, threads))
                        },
                        o,
                        threads,
                    );
                });
                if !ok {
                    return Err(TensorError::internal("matmul operands out of bounds"));
                }
            }
        }
        Kind::Activation(act) => {
            if dt == DType::I32 {
                let x = ints(inputs[0], n_x);
                with_int_out(out, n_out, |o| elementwise::relu_i32(&x, o));
            } else {
                let x = floats(dt, inputs[0], n_x);
                with_float_out(dt, out, n_out, |o| elementwise::activate(*act, &x, o));
            }
        }
        Kind::Softmax => {
            let len = *x_shape.dims().last().unwrap_or(&1);
            let x = floats(dt, inputs[0], n_x);
            with_float_out(dt, out, n_out, |o| norm::softmax(&x, len, o));
        }
        Kind::LayerNorm { eps, gamma, beta } => {
            let len = *x_shape.dims().last().unwrap_or(&1);
            let x = floats(dt, inputs[0], n_x);
            let g = gamma.then(|| floats(dt, inputs[1], len));
            let b = beta.then(|| floats(dt, inputs[2], len));
            with_float_out(dt, out, n_out, |o| {
                norm::layer_norm(&x, len, g.as_deref(), b.as_deref(), *eps, o)
            });
        }
        Kind::RmsNorm { eps, weight } => {
            let len = *x_shape.dims().last().unwrap_or(&1);
            let x = floats(dt, inputs[0], n_x);
            let w = weight.then(|| floats(dt, inputs[1], len));
            with_float_out(dt, out, n_out, |o| {
                norm::rms_norm(&x, len, w.as_deref(), *eps, o)
            });
        }
        Kind::Copy => {
            let odt = plan.out_dtype;
            if odt == dt {
                out[..n_out * dt.size()].copy_from_slice(&inputs[0][..n_x * dt.size()]);
            } else {
                let x = floats(dt, inputs[0], n_x);
                dtype::from_f32(odt, &x, out);
            }
        }
        Kind::Transpose { perm } => {
            layout::permute(inputs[0], x_shape.dims(), perm, dt.size(), out);
        }
        Kind::Reduce { mean, reduce: axes } => {
            let count = x_shape
                .dims()
                .iter()
                .zip(axes)
                .filter(|(_, &r)| r)
                .map(|(&d, _)| d)
                .product::<usize>();
            if dt == DType::I32 {
                let x = ints(inputs[0], n_x);
                with_int_out(out, n_out, |o| reduce::sum_i32(&x, x_shape.dims(), axes, o));
            } else {
                let x = floats(dt, inputs[0], n_x);
                with_float_out(dt, out, n_out, |o| {
                    reduce::sum_f32(&x, x_shape.dims(), axes, o);
                    if *mean {
                        let inv = 1.0 / count as f32;
                        o.iter_mut().for_each(|v| *v *= inv);
                    }
                });
            }
        }
    }
    Ok(())
}

/// Threads for each product: all of them unless batches run in parallel.
fn threads_for(mm: &MatMulPlan, threads: usize) -> usize {
    if parallel_batches(mm, threads) {
        1
    } else {
        threads
    }
}

/// Many small products: one per thread beats splitting each one.
fn parallel_batches(mm: &MatMulPlan, threads: usize) -> bool {
    let batches: usize = mm.batch.iter().product();
    threads > 1 && batches >= threads && mm.m * mm.n * mm.k <= 128 * 128 * 128
}

/// Run `f(a_index, b_index, c)` for every batch (indices in whole matrices).
fn batched<T: Send>(
    mm: &MatMulPlan,
    f: impl Fn(usize, usize, &mut [T]) -> bool + Sync,
    out: &mut [T],
    threads: usize,
) -> bool {
    let mn = mm.m * mm.n;
    if mn == 0 {
        return true;
    }
    let dims = &mm.batch;
    let index = |b: usize| {
        let mut rest = b;
        let (mut ia, mut ib) = (0, 0);
        for ax in (0..dims.len()).rev() {
            let i = rest % dims[ax];
            rest /= dims[ax];
            ia += i * mm.a_batch[ax];
            ib += i * mm.b_batch[ax];
        }
        (ia, ib)
    };
    if parallel_batches(mm, threads) {
        out.par_chunks_mut(mn)
            .enumerate()
            .map(|(b, c)| {
                let (ia, ib) = index(b);
                f(ia, ib, c)
            })
            .all(|ok| ok)
    } else {
        out.chunks_mut(mn).enumerate().all(|(b, c)| {
            let (ia, ib) = index(b);
            f(ia, ib, c)
        })
    }
}
