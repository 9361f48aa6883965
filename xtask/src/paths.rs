//! Where things are in the repository.

use std::path::{Path, PathBuf};

use nexus_e2e::BuildDir;

/// The repository root (xtask lives in `<root>/xtask`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repository")
}

/// `build/`: the ESP, its image, built binaries and serial transcripts.
pub fn build_dir() -> BuildDir {
    BuildDir::new(root().join("build"))
}

/// The policy `build` and `run` use when none is given.
pub fn default_policy() -> PathBuf {
    root().join("policies").join("qemu-dev.toml")
}
