//! Zeroing a partition's memory before its guest runs (review M6): whatever the firmware,
//! a previous partition or a previous OS (after a warm reboot) left there must not reach
//! the new guest.

/// Zero `words` and answer how many bytes were not zero before (for the log: proof that
/// something stale was there, or that nothing was).
pub fn scrub(words: &mut [u64]) -> u64 {
    let mut stale = 0u64;
    for w in words.iter_mut() {
        if *w != 0 {
            stale += w.to_le_bytes().iter().filter(|b| **b != 0).count() as u64;
            *w = 0;
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroes_everything_and_counts_the_bytes_that_were_not() {
        let mut mem = [0u64; 64];
        assert_eq!(scrub(&mut mem), 0);
        mem[3] = 0xff00_0000_0000_00a5;
        mem[63] = u64::MAX;
        assert_eq!(scrub(&mut mem), 2 + 8);
        assert!(mem.iter().all(|w| *w == 0));
        assert_eq!(scrub(&mut mem), 0);
    }
}
