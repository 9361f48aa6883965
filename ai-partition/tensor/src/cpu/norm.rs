//! Row-wise normalisations over the last axis: softmax, layer norm, RMS norm.
//! Sums accumulate in f64 so long rows keep f32 accuracy.

use rayon::prelude::*;

/// Rows per task when split between threads.
fn rows_per_task(len: usize) -> usize {
    ((1 << 15) / len.max(1)).max(1)
}

fn rows_mut(x: &[f32], out: &mut [f32], len: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    let per = rows_per_task(len);
    if out.len() < (1 << 16) {
        for (o, r) in out.chunks_exact_mut(len).zip(x.chunks_exact(len)) {
            f(r, o);
        }
        return;
    }
    out.par_chunks_mut(per * len)
        .zip(x.par_chunks(per * len))
        .for_each(|(o, x)| {
            for (o, r) in o.chunks_exact_mut(len).zip(x.chunks_exact(len)) {
                f(r, o);
            }
        });
}

/// Softmax of each row of `len` elements; stable (the row's max is
/// subtracted first), so large values do not overflow.
pub fn softmax(x: &[f32], len: usize, out: &mut [f32]) {
    rows_mut(x, out, len, |row, o| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for (d, &v) in o.iter_mut().zip(row) {
            *d = (v - max).exp();
            sum += *d as f64;
        }
        let inv = (1.0 / sum) as f32;
        for d in o.iter_mut() {
            *d *= inv;
        }
    });
}

/// (x - mean) / sqrt(var + eps) * gamma + beta per row (biased variance, as
/// PyTorch's `layer_norm`).
pub fn layer_norm(
    x: &[f32],
    len: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    rows_mut(x, out, len, |row, o| {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (j, (d, &v)) in o.iter_mut().zip(row).enumerate() {
            let mut y = ((v as f64 - mean) * inv) as f32;
            if let Some(g) = gamma {
                y *= g[j];
            }
            if let Some(b) = beta {
                y += b[j];
            }
            *d = y;
        }
    });
}

/// x / sqrt(mean(x^2) + eps) * weight per row.
pub fn rms_norm(x: &[f32], len: usize, weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    rows_mut(x, out, len, |row, o| {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / len as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for (j, (d, &v)) in o.iter_mut().zip(row).enumerate() {
            *d = v * inv * weight.map_or(1.0, |w| w[j]);
        }
    });
}
