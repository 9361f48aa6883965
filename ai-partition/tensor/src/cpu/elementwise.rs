//! Elementwise kernels: binary operations with numpy broadcasting, and
//! activations. Plain loops the compiler vectorises for the baseline ISA;
//! large tensors are split between the pool's threads.

use rayon::prelude::*;

use super::strided::run_offsets;

/// Below this many elements a kernel runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;
/// Elements per task when split.
const CHUNK: usize = 1 << 15;

/// A binary elementwise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// An input as the kernels read it: its data and its strides (in elements)
/// against the output's shape, 0 along broadcast axes.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a, T> {
    pub data: &'a [T],
    pub strides: &'a [usize],
}

/// Arithmetic the binary kernels need, for f32 and (wrapping) i32.
pub trait Num: Copy + Send + Sync + 'static {
    fn apply(op: Binary, a: Self, b: Self) -> Self;
}

impl Num for f32 {
    #[inline(always)]
    fn apply(op: Binary, a: f32, b: f32) -> f32 {
        match op {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }
}

impl Num for i32 {
    #[inline(always)]
    fn apply(op: Binary, a: i32, b: i32) -> i32 {
        match op {
            Binary::Add => a.wrapping_add(b),
            Binary::Sub => a.wrapping_sub(b),
            Binary::Mul => a.wrapping_mul(b),
            // Callers refuse integer division; keep this total anyway.
            Binary::Div => a.checked_div(b).unwrap_or(0),
        }
    }
}

/// `out = a op b` over the output shape `dims` (contiguous `out`).
pub fn binary<T: Num>(
    op: Binary,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    dims: &[usize],
    out: &mut [T],
) {
    let contiguous = crate::shape::contiguous_strides(dims);
    if a.strides == contiguous.as_slice() && b.strides == contiguous.as_slice() {
        // Same shapes: one flat loop, specialised per operation so it vectorises.
        match op {
            Binary::Add => zip_flat(a.data, b.data, out, |x, y| T::apply(Binary::Add, x, y)),
            Binary::Sub => zip_flat(a.data, b.data, out, |x, y| T::apply(Binary::Sub, x, y)),
            Binary::Mul => zip_flat(a.data, b.data, out, |x, y| T::apply(Binary::Mul, x, y)),
            Binary::Div => zip_flat(a.data, b.data, out, |x, y| T::apply(Binary::Div, x, y)),
        }
        return;
    }
    let len = dims.last().copied().unwrap_or(1);
    let sa = a.strides.last().copied().unwrap_or(0);
    let sb = b.strides.last().copied().unwrap_or(0);
    let runs = out.len() / len.max(1);
    let rows_per_task = (CHUNK / len.max(1)).max(1);
    let task = |first: usize, rows: &mut [T]| {
        let count = rows.len() / len;
        for r in 0..count {
            let [oa, ob] = run_offsets(dims, [a.strides, b.strides], first + r);
            let dst = &mut rows[r * len..(r + 1) * len];
            match (sa, sb) {
                (1, 1) => zip_into(&a.data[oa..oa + len], &b.data[ob..ob + len], dst, op),
                (1, 0) => {
                    let y = b.data[ob];
                    for (d, &x) in dst.iter_mut().zip(&a.data[oa..oa + len]) {
                        *d = T::apply(op, x, y);
                    }
                }
                (0, 1) => {
                    let x = a.data[oa];
                    for (d, &y) in dst.iter_mut().zip(&b.data[ob..ob + len]) {
                        *d = T::apply(op, x, y);
                    }
                }
                _ => {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = T::apply(op, a.data[oa + j * sa], b.data[ob + j * sb]);
                    }
                }
            }
        }
    };
    if out.len() < PARALLEL_MIN || runs < 2 {
        task(0, out);
    } else {
        out.par_chunks_mut(rows_per_task * len)
            .enumerate()
            .for_each(|(i, rows)| task(i * rows_per_task, rows));
    }
}

fn zip_into<T: Num>(a: &[T], b: &[T], out: &mut [T], op: Binary) {
    match op {
        Binary::Add => zip_serial(a, b, out, |x, y| T::apply(Binary::Add, x, y)),
        Binary::Sub => zip_serial(a, b, out, |x, y| T::apply(Binary::Sub, x, y)),
        Binary::Mul => zip_serial(a, b, out, |x, y| T::apply(Binary::Mul, x, y)),
        Binary::Div => zip_serial(a, b, out, |x, y| T::apply(Binary::Div, x, y)),
    }
}

#[inline(always)]
fn zip_serial<T: Copy>(a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

fn zip_flat<T: Num>(a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T + Sync) {
    if out.len() < PARALLEL_MIN {
        zip_serial(a, b, out, &f);
        return;
    }
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .zip(b.par_chunks(CHUNK))
        .for_each(|((o, x), y)| zip_serial(x, y, o, &f));
}

/// An activation applied elementwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact GELU: x/2 (1 + erf(x / sqrt 2)).
    Gelu,
    /// x sigmoid(x).
    Silu,
}

pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `out = act(x)` for f32.
pub fn activate(act: Activation, x: &[f32], out: &mut [f32]) {
    match act {
        Activation::Relu => map(x, out, |v| if v > 0.0 { v } else { 0.0 }),
        Activation::Gelu => map(x, out, gelu),
        Activation::Silu => map(x, out, silu),
    }
}

/// Relu for i32.
pub fn relu_i32(x: &[i32], out: &mut [i32]) {
    map(x, out, |v| v.max(0));
}

/// `out[i] = f(x[i])`, split between threads when large.
pub fn map<T: Copy + Send + Sync>(x: &[T], out: &mut [T], f: impl Fn(T) -> T + Sync) {
    let serial = |x: &[T], out: &mut [T]| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f(v);
        }
    };
    if out.len() < PARALLEL_MIN {
        serial(x, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| serial(x, o));
    }
}
