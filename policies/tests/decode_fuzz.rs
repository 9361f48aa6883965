//! The decoder never panics, whatever the bytes: random mutations of valid
//! blobs (with and without a repaired checksum, so the deep checks run too)
//! and random blobs. When a mutated blob still decodes, every accessor runs.

use nexus_policy::compiled::format::HDR_CRC;
use nexus_policy::compiled::{checksum, CompiledPolicy};
use nexus_policy::{compile, load_file};
use proptest::prelude::*;

fn blobs() -> Vec<Vec<u8>> {
    ["i9-13900hx-rtx4080.toml", "qemu-dev.toml"]
        .iter()
        .map(|n| {
            compile(&load_file(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(n)).unwrap())
        })
        .collect()
}

/// Touches everything a decoded policy exposes.
fn walk(c: &CompiledPolicy<'_>) -> usize {
    let m = c.machine();
    let mut n = m.name().len() + m.cpus().count() + m.pci().count() + m.memory() as usize % 7;
    n += m.gpu().map_or(0, |g| g.name.len()) + m.cpu_counts().map_or(0, |x| x.p as usize);
    for p in c.partitions() {
        n += p.name().len() + p.image().map_or(0, str::len) + p.cmdline().map_or(0, str::len);
        n += p.cpus().count() + p.pci().count() + p.vram().count() + p.groups().bits() as usize;
        n += p.role() as usize + p.low_latency() as usize + p.memory_remainder() as usize;
        for r in p.memory() {
            n += (r.end() % 3) as usize + r.kind() as usize;
            n += r.shared_with().filter_map(|i| c.partition(i)).count();
        }
    }
    for v in c.vram_regions() {
        n += v.name().len() + v.owner().map_or(0, |p| p.index()) + (v.offset() % 5) as usize;
    }
    n
}

fn fix_crc(b: &mut [u8]) {
    if b.len() >= HDR_CRC + 4 {
        let crc = checksum(b);
        b[HDR_CRC..HDR_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_blobs_never_panic(
        which in 0usize..2,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        repair in any::<bool>(),
    ) {
        let mut b = blobs()[which].clone();
        for (at, v) in &edits {
            let i = at.index(b.len());
            b[i] = *v;
        }
        if let Some(cut) = cut {
            b.truncate(cut.index(b.len() + 1));
        }
        if repair {
            fix_crc(&mut b);
        }
        if let Ok(c) = CompiledPolicy::decode(&b) {
            walk(&c);
        }
    }

    #[test]
    fn random_bytes_never_panic(mut b in prop::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        if magic && b.len() >= 24 {
            b[..8].copy_from_slice(b"NXPOLICY");
            b[8..10].copy_from_slice(&1u16.to_le_bytes());
            let len = b.len() as u32;
            b[12..16].copy_from_slice(&len.to_le_bytes());
            fix_crc(&mut b);
        }
        if let Ok(c) = CompiledPolicy::decode(&b) {
            walk(&c);
        }
    }
}

#[test]
fn every_single_byte_corruption_is_caught_or_harmless() {
    // Without checksum repair, any one-byte change must be refused (CRC-32
    // detects every single-byte error).
    for blob in blobs() {
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x5a;
            assert!(
                CompiledPolicy::decode(&b).is_err(),
                "byte {i} change accepted"
            );
        }
    }
}
