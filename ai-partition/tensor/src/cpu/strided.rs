//! Walking a strided view: the outer axes with an odometer, the last axis as
//! a run the kernels loop over (stride 0 for broadcast, 1 for contiguous).

/// Visit every run along the last axis of `dims`: `f(run_index, offsets)`
/// gets the starting offset of each of the `N` views, whose strides (in
/// elements, one per axis of `dims`) are in `strides`. Rank 0 is one run of
/// length 1.
pub fn for_each_run<const N: usize>(
    dims: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N]),
) {
    let rank = dims.len();
    if rank <= 1 {
        f(0, [0; N]);
        return;
    }
    let outer = &dims[..rank - 1];
    let runs: usize = outer.iter().product();
    let mut idx = vec![0usize; outer.len()];
    let mut offs = [0usize; N];
    for run in 0..runs {
        f(run, offs);
        // Advance the odometer, updating each view's offset incrementally.
        for ax in (0..outer.len()).rev() {
            idx[ax] += 1;
            for v in 0..N {
                offs[v] += strides[v][ax];
            }
            if idx[ax] < outer[ax] {
                break;
            }
            for v in 0..N {
                offs[v] -= strides[v][ax] * outer[ax];
            }
            idx[ax] = 0;
        }
    }
}

/// Offsets of the start of run `run` (as numbered by [`for_each_run`]) in
/// each view: for splitting the runs between threads.
pub fn run_offsets<const N: usize>(
    dims: &[usize],
    strides: [&[usize]; N],
    run: usize,
) -> [usize; N] {
    let rank = dims.len();
    let mut offs = [0usize; N];
    if rank <= 1 {
        return offs;
    }
    let mut rest = run;
    for ax in (0..rank - 1).rev() {
        let i = rest % dims[ax];
        rest /= dims[ax];
        for v in 0..N {
            offs[v] += i * strides[v][ax];
        }
    }
    offs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_visit_every_row_with_the_right_offsets() {
        let dims = [2, 3, 4];
        let a = [12, 4, 1];
        let b = [0, 1, 0]; // broadcast [3] along axes 0 and 2
        let mut seen = Vec::new();
        for_each_run(&dims, [&a, &b], |run, [oa, ob]| seen.push((run, oa, ob)));
        assert_eq!(
            seen,
            [
                (0, 0, 0),
                (1, 4, 1),
                (2, 8, 2),
                (3, 12, 0),
                (4, 16, 1),
                (5, 20, 2)
            ]
        );
        for (run, oa, ob) in seen {
            assert_eq!(run_offsets(&dims, [&a, &b], run), [oa, ob]);
        }
        let mut one = Vec::new();
        for_each_run(&[], [&[]], |r, [o]| one.push((r, o)));
        assert_eq!(one, [(0, 0)]);
    }
}
