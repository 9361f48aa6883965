//! Seeded fills. Counter-based: element `i` depends only on the seed and
//! `i`, so every backend and any number of threads give the same values.

/// SplitMix64's finaliser: a well-mixed 64-bit value for (seed, counter).
pub fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed
        .wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 53 random bits.
fn unit(seed: u64, counter: u64) -> f64 {
    (mix(seed, counter) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Element `i` of a uniform fill in `[lo, hi)`.
pub fn uniform(seed: u64, i: u64, lo: f64, hi: f64) -> f64 {
    let v = lo + (hi - lo) * unit(seed, i);
    // Rounding can land on `hi`; keep the interval half-open.
    if v >= hi {
        lo
    } else {
        v
    }
}

/// Element `i` of a normal fill (Box–Muller on two counters per element).
pub fn normal(seed: u64, i: u64, mean: f64, std: f64) -> f64 {
    let u1 = 1.0 - unit(seed, 2 * i); // (0, 1]: ln is finite
    let u2 = unit(seed, 2 * i + 1);
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    mean + std * z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_are_deterministic_and_have_the_right_moments() {
        let n = 200_000u64;
        let u: Vec<f64> = (0..n).map(|i| uniform(42, i, -2.0, 6.0)).collect();
        assert!(u.iter().all(|&v| (-2.0..6.0).contains(&v)));
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.05, "{mean}");
        let z: Vec<f64> = (0..n).map(|i| normal(7, i, 1.0, 3.0)).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64;
        assert!((m - 1.0).abs() < 0.05, "{m}");
        assert!((var.sqrt() - 3.0).abs() < 0.05, "{var}");
        assert_eq!(uniform(42, 17, 0.0, 1.0), uniform(42, 17, 0.0, 1.0));
        assert_ne!(uniform(42, 17, 0.0, 1.0), uniform(43, 17, 0.0, 1.0));
    }
}
