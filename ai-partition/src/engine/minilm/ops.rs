//! Dense f32 kernels for the BERT encoder, written so the compiler vectorises the inner
//! loops (independent accumulators over contiguous slices).

/// `out[i][o] = x[i] · w[o] + b[o]` for `x`: rows×`n_in`, `w`: `n_out`×`n_in` (PyTorch
/// layout), `out`: rows×`n_out`.
///
/// Rows are taken four at a time so each weight row is read from memory once per four
/// tokens (the weights, not the arithmetic, bound this on a CPU).
pub fn linear(x: &[f32], w: &[f32], b: &[f32], n_in: usize, out: &mut [f32]) {
    let n_out = b.len();
    debug_assert_eq!(w.len(), n_out * n_in);
    debug_assert_eq!(x.len() / n_in, out.len() / n_out);
    let mut xs = x.chunks_exact(4 * n_in);
    let mut outs = out.chunks_exact_mut(4 * n_out);
    for (x4, o4) in (&mut xs).zip(&mut outs) {
        let (x0, rest) = x4.split_at(n_in);
        let (x1, rest) = rest.split_at(n_in);
        let (x2, x3) = rest.split_at(n_in);
        for (j, (wr, &bias)) in w.chunks_exact(n_in).zip(b).enumerate() {
            let d = dot4(wr, [x0, x1, x2, x3]);
            for (r, v) in d.iter().enumerate() {
                o4[r * n_out + j] = v + bias;
            }
        }
    }
    let rest_out = outs.into_remainder();
    for (xr, or) in xs
        .remainder()
        .chunks_exact(n_in)
        .zip(rest_out.chunks_exact_mut(n_out))
    {
        for ((o, wr), &bias) in or.iter_mut().zip(w.chunks_exact(n_in)).zip(b) {
            *o = dot(xr, wr) + bias;
        }
    }
}

/// `w · x[r]` for four vectors at once.
fn dot4(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 8]; 4];
    let n8 = w.len() / 8 * 8;
    for (k, wc) in w[..n8].chunks_exact(8).enumerate() {
        for (a, xr) in acc.iter_mut().zip(x) {
            let xc = &xr[k * 8..k * 8 + 8];
            for l in 0..8 {
                a[l] += wc[l] * xc[l];
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), xr) in out.iter_mut().zip(&acc).zip(x) {
        *o = a.iter().sum::<f32>()
            + w[n8..]
                .iter()
                .zip(&xr[n8..])
                .map(|(p, q)| p * q)
                .sum::<f32>();
    }
    out
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// In-place layer normalisation of every `gamma.len()`-wide row.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    for row in x.chunks_exact_mut(n) {
        let mean = row.iter().sum::<f32>() / n as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// In-place softmax of one row.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// BERT's exact GELU, `x/2 · (1 + erf(x/√2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// erf with absolute error below 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), in f64.
fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    (if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_hand_computation() {
        // x = [[1,2],[3,4]], w = [[1,0],[1,1],[0,2]], b = [0,1,-1]
        let mut out = [0.0; 6];
        linear(
            &[1., 2., 3., 4.],
            &[1., 0., 1., 1., 0., 2.],
            &[0., 1., -1.],
            2,
            &mut out,
        );
        assert_eq!(out, [1., 4., 3., 3., 8., 7.]);
        // Six rows of width 19: the four-row blocks and the remainder agree with plain dots.
        let x: Vec<f32> = (0..6 * 19).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..5 * 19).map(|i| (i % 5) as f32 * 0.5).collect();
        let b = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = vec![0.0; 6 * 5];
        linear(&x, &w, &b, 19, &mut out);
        for r in 0..6 {
            for o in 0..5 {
                let want = dot(&x[r * 19..(r + 1) * 19], &w[o * 19..(o + 1) * 19]) + b[o];
                assert!((out[r * 5 + o] - want).abs() < 1e-4, "row {r} out {o}");
            }
        }
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
    }

    #[test]
    fn layer_norm_and_softmax_normalise() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.0; 4], 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{x:?}");
        let mut s = [1.0, 2.0, 3.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(s[2] > s[1] && s[1] > s[0]);
    }

    #[test]
    fn gelu_matches_reference_values() {
        // Exact values, 0.5·x·(1 + math.erf(x/√2)) in Python.
        for (x, want) in [
            (0.0, 0.0),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_3),
            (2.5, 2.484_475_8),
        ] {
            assert!(
                (gelu(x) - want).abs() < 1e-6,
                "gelu({x}) = {} want {want}",
                gelu(x)
            );
        }
    }
}
