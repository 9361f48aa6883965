//! Sum and mean over any set of axes.

use super::strided::for_each_run;

/// Sum of `x` (shape `dims`, contiguous) over the axes flagged in `reduce`,
/// into `out` laid out as `dims` without those axes. f32 accumulates in f64.
pub fn sum_f32(x: &[f32], dims: &[usize], reduce: &[bool], out: &mut [f32]) {
    let mut acc = vec![0f64; out.len()];
    accumulate(x, dims, reduce, &mut acc, |a, v| *a += v as f64);
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// Integer sum, wrapping as i32 arithmetic does in C and numpy.
pub fn sum_i32(x: &[i32], dims: &[usize], reduce: &[bool], out: &mut [i32]) {
    out.fill(0);
    accumulate(x, dims, reduce, out, |a, v| *a = a.wrapping_add(v));
}

fn accumulate<T: Copy, A>(
    x: &[T],
    dims: &[usize],
    reduce: &[bool],
    acc: &mut [A],
    add: impl Fn(&mut A, T),
) {
    // Output strides in input order: 0 on reduced axes.
    let kept: Vec<usize> = dims
        .iter()
        .zip(reduce)
        .filter(|(_, &r)| !r)
        .map(|(&d, _)| d)
        .collect();
    let kept_strides = crate::shape::contiguous_strides(&kept);
    let mut k = kept_strides.iter();
    let out_strides: Vec<usize> = reduce
        .iter()
        .map(|&r| {
            if r {
                0
            } else {
                *k.next().expect("one per kept axis")
            }
        })
        .collect();
    let in_strides = crate::shape::contiguous_strides(dims);
    let len = dims.last().copied().unwrap_or(1);
    let step = out_strides.last().copied().unwrap_or(0);
    for_each_run(dims, [&in_strides, &out_strides], |_, [i, o]| {
        let row = &x[i..i + len];
        if step == 0 {
            let a = &mut acc[o];
            for &v in row {
                add(a, v);
            }
        } else {
            for (j, &v) in row.iter().enumerate() {
                add(&mut acc[o + j], v);
            }
        }
    });
}
