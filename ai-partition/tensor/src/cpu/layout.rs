//! Data movement without arithmetic: axis permutation over raw element
//! bytes (any element type).

use super::strided::for_each_run;

/// `out` = `input` (shape `dims`, contiguous, elements of `elem` bytes) with
/// its axes permuted: output axis `i` is input axis `perm[i]`.
pub fn permute(input: &[u8], dims: &[usize], perm: &[usize], elem: usize, out: &mut [u8]) {
    let in_strides = crate::shape::contiguous_strides(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    // The input's strides seen in output order.
    let src: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let dst = crate::shape::contiguous_strides(&out_dims);
    let len = out_dims.last().copied().unwrap_or(1);
    let step = src.last().copied().unwrap_or(1);
    for_each_run(&out_dims, [&src, &dst], |_, [s, d]| {
        for j in 0..len {
            let from = (s + j * step) * elem;
            let to = (d + j) * elem;
            out[to..to + elem].copy_from_slice(&input[from..from + elem]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_index_arithmetic() {
        let dims = [2, 3, 5];
        let input: Vec<u8> = (0..30).collect();
        let mut out = vec![0u8; 30];
        permute(&input, &dims, &[2, 0, 1], 1, &mut out);
        // out[k][i][j] = in[i][j][k]
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..5 {
                    assert_eq!(out[k * 6 + i * 3 + j], input[i * 15 + j * 5 + k]);
                }
            }
        }
        // Two-byte elements move whole.
        let wide: Vec<u8> = (0..12).collect();
        let mut out = vec![0u8; 12];
        permute(&wide, &[2, 3], &[1, 0], 2, &mut out);
        assert_eq!(out, [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
    }
}
