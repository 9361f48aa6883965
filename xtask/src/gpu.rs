//! Whether this machine has an NVIDIA GPU, as `nvidia-smi` sees it: the
//! steps that can only run on one (CUDA tests, GPU benchmarks) ask here.

use std::process::Command;

/// The GPUs `nvidia-smi -L` lists, or `None` without a driver or a GPU.
pub fn nvidia_gpus() -> Option<String> {
    let out = Command::new("nvidia-smi").arg("-L").output().ok()?;
    let list = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !list.is_empty()).then_some(list)
}
