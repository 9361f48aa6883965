//! f32 matrix products through the `gemm` crate (chosen by measurement
//! against matrixmultiply and OpenBLAS: docs/ai-tensor.md), which picks its
//! AVX2/FMA or AVX-512 kernels at run time. Its entry point takes raw
//! pointers; this module is the only place that calls it.

/// A matrix read through strides (in elements; 0 repeats a row or column,
/// as broadcasting does). Strides are non-negative.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatRef<'_> {
    /// Whether every element the strides reach lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c));
        last.is_some_and(|l| l < self.data.len())
            && isize::try_from(self.row_stride).is_ok()
            && isize::try_from(self.col_stride).is_ok()
    }
}

/// `c = a · b` with `c` row-major `a.rows x b.cols`, on `threads` threads
/// of the current rayon pool (1: the calling thread). `false` when the
/// shapes or bounds do not fit (nothing written).
#[must_use]
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], threads: usize) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !a.in_bounds() || !b.in_bounds() || m.checked_mul(n) != Some(c.len()) {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        c.fill(0.0);
        return true;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `a` and `b` were checked above to address only elements inside
    // their slices (largest offset (rows-1)*row_stride + (cols-1)*col_stride),
    // strides fit isize; `c` is exactly m*n elements, row-major (row stride
    // n, column stride 1), and borrowed mutably so nothing aliases it. With
    // read_dst false the crate never reads `c` (alpha is ignored).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    true
}

/// Wrapping i32 product (`c` row-major), i-k-j order so the inner loop runs
/// along contiguous rows of `b` and `c`.
pub fn matmul_i32(a: &[i32], b: &[i32], m: usize, k: usize, n: usize, c: &mut [i32]) {
    c.fill(0);
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let x = a[i * k + p];
            for (d, &y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *d = d.wrapping_add(x.wrapping_mul(y));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &MatRef<'_>, b: &MatRef<'_>) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0f64;
                for p in 0..a.cols {
                    s += a.data[i * a.row_stride + p * a.col_stride] as f64
                        * b.data[p * b.row_stride + j * b.col_stride] as f64;
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    fn close(x: &[f32], y: &[f32], tol: f32) {
        for (i, (a, b)) in x.iter().zip(y).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "at {i}: {a} vs {b}");
        }
    }

    #[test]
    fn odd_sizes_and_transposed_operands_match_the_definition() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 1, 65), (129, 67, 3)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 23) as f32 - 11.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104_729) % 19) as f32 * 0.25)
                .collect();
            let am = MatRef {
                data: &a,
                rows: m,
                cols: k,
                row_stride: k,
                col_stride: 1,
            };
            // b stored transposed (n x k) and read through swapped strides.
            let mut bt = vec![0f32; k * n];
            for p in 0..k {
                for j in 0..n {
                    bt[j * k + p] = b[p * n + j];
                }
            }
            let bm = MatRef {
                data: &b,
                rows: k,
                cols: n,
                row_stride: n,
                col_stride: 1,
            };
            let btm = MatRef {
                data: &bt,
                rows: k,
                cols: n,
                row_stride: 1,
                col_stride: k,
            };
            let want = naive(&am, &bm);
            for threads in [1, 2] {
                let mut c = vec![f32::NAN; m * n];
                assert!(matmul(am, bm, &mut c, threads));
                close(&c, &want, 1e-5);
                let mut c = vec![f32::NAN; m * n];
                assert!(matmul(am, btm, &mut c, threads));
                close(&c, &want, 1e-5);
            }
        }
    }

    #[test]
    fn broadcast_rows_and_bounds() {
        // A row stride of 0 repeats one row of `a`.
        let a = [1.0f32, 2.0];
        let b = [1.0f32, 0.0, 0.0, 1.0];
        let am = MatRef {
            data: &a,
            rows: 3,
            cols: 2,
            row_stride: 0,
            col_stride: 1,
        };
        let bm = MatRef {
            data: &b,
            rows: 2,
            cols: 2,
            row_stride: 2,
            col_stride: 1,
        };
        let mut c = [0f32; 6];
        assert!(matmul(am, bm, &mut c, 1));
        assert_eq!(c, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        // Strides that reach past the data are refused, not read.
        let bad = MatRef {
            data: &a,
            rows: 2,
            cols: 2,
            row_stride: 2,
            col_stride: 1,
        };
        assert!(!matmul(bad, bm, &mut [0f32; 4], 1));
        assert!(!matmul(am, bm, &mut [0f32; 5], 1));
        let huge = MatRef {
            data: &a,
            rows: 2,
            cols: 2,
            row_stride: usize::MAX,
            col_stride: 1,
        };
        assert!(!matmul(huge, bm, &mut [0f32; 4], 1));
    }

    #[test]
    fn integer_product_wraps() {
        let mut c = [0i32; 1];
        matmul_i32(&[i32::MAX, 2], &[2, 1], 1, 2, 1, &mut c);
        assert_eq!(c[0], i32::MAX.wrapping_mul(2).wrapping_add(2));
    }
}
