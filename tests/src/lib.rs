//! Runners for end-to-end tests that boot real NexusOS images.
//!
//! - [`bochs`]: boot an ESP image in Bochs (Intel VMX) with a timeout and read the verdict;
//! - [`qemu`]: boot an ESP in QEMU with OVMF, with a timeout, and read the image's verdict;
//! - [`process`]: run any emulator under a deadline and collect its console (used by the runners);
//! - [`transcript`]: find lines, per-partition output, the `NEXUS RESULT:` line, counters;
//! - [`esp`]: lay out an ESP directory or FAT image;
//! - [`linux`]: boot the primary's Linux (with or without the hypervisor) and read `/init`'s
//!   marker and the output and status of its command; [`initramfs`] and [`cpio`] write the
//!   initramfs it runs;
//! - [`build_dir`]: where `cargo xtask build` put the images;
//! - [`checks`], [`probe`]: transcript checks shared by the SVM and VMX image tests (the
//!   development policies' runs, the primary probe's runs).
//!
//! The tests in `tests/` are `#[ignore]`d for a plain `cargo test`: they need built images and
//! emulators, which `cargo xtask test` provides before running them with `--include-ignored`.

pub mod bochs;
pub mod build_dir;
pub mod checks;
pub mod cpio;
pub mod cpu_reset;
pub mod esp;
pub mod initramfs;
pub mod linux;
pub mod probe;
pub mod process;
pub mod qemu;
pub mod transcript;

pub use build_dir::BuildDir;
pub use qemu::{Disk, Outcome, QemuConfig, QemuRun, Watch};
pub use transcript::{Transcript, Verdict};
