//! ggml's CPU kernels, chosen at run time.
//!
//! llama.cpp is built once for every x86-64 CPU: ggml's CPU backend is compiled several
//! times, one shared object per feature level (`libggml-cpu-<variant>.so`: `x64`, `sse42`,
//! `haswell`, `skylakex`, `zen4`, `alderlake`, …), and this module loads the best one the
//! CPU can run, as ggml's own loader would, except that
//! - it looks next to the executable (`backends/`), so a bundle is relocatable;
//! - `NEXUS_AI_CPU_VARIANT` forces a variant (under QEMU's TCG the plain `x64` one is
//!   several times faster than the AVX2 code it would pick);
//! - it refuses variants the toolchain is known to miscompile ([`REFUSED`]);
//! - it reports which variant it chose, and every failure says what was looked at.
//!
//! Every `unsafe` block of the backend loading is here: loading a shared object runs its
//! initialisers, and its entry points are C functions.

use std::ffi::{c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

/// Forces a variant by name (empty or `auto`: the best this CPU runs).
pub const VARIANT_ENV: &str = "NEXUS_AI_CPU_VARIANT";
/// Where to look for the variants instead of the default places.
pub const DIR_ENV: &str = "NEXUS_AI_BACKENDS_DIR";
/// The folder next to the executable that holds the variants in a bundle.
pub const BUNDLE_DIR: &str = "backends";

const FILE_PREFIX: &str = "libggml-cpu-";
const FILE_SUFFIX: &str = ".so";

/// Variants never loaded, with the reason. Sapphire Rapids' variant is the only one with
/// AMX code, and Debian 12's GCC 12.2 declares `_tile_loadconfig`'s operand as 8 bytes, so
/// at -O2 it drops the stores that fill the 64-byte tile configuration: `ldtilecfg` then
/// faults (SIGSEGV, or SIGILL at `tileloadd`). AMX CPUs run the `zen4` variant (AVX-512
/// with VBMI, VNNI and BF16) instead.
pub const REFUSED: &[(&str, &str)] = &[(
    "sapphirerapids",
    "its AMX kernels are miscompiled by GCC 12 (_tile_loadconfig drops the tile \
     configuration); AMX CPUs use the zen4 variant",
)];

/// The CPU backend this process runs on, and what else was there.
#[derive(Clone, Debug, Serialize)]
pub struct CpuBackend {
    /// The variant loaded (`haswell`, `zen4`, …).
    pub variant: String,
    /// Its shared object.
    pub path: PathBuf,
    /// Whether `NEXUS_AI_CPU_VARIANT` chose it rather than the CPU's features.
    pub forced: bool,
    /// The variants found that this CPU can run, best first.
    pub supported: Vec<String>,
    /// The variants found that need features this CPU lacks.
    pub unsupported: Vec<String>,
    /// The variants found and refused ([`REFUSED`]).
    pub refused: Vec<String>,
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// ggml's system info once the variant is loaded: the instruction sets it uses
    /// (`CPU : SSE3 = 1 | AVX2 = 1 | …`), comparable with llama-cpp-python's.
    pub ggml_features: String,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "no llama.cpp CPU backends ({FILE_PREFIX}*{FILE_SUFFIX}) found; looked in {}. \
         Run nexus-ai from the folder `cargo xtask ai-bundle` makes, or set {DIR_ENV}",
        list_paths(looked_in)
    )]
    NotFound { looked_in: Vec<PathBuf> },
    #[error("{DIR_ENV}={}: {reason}", dir.display())]
    BadDir { dir: PathBuf, reason: String },
    #[error("{VARIANT_ENV}={name}: no such CPU variant in {}; this CPU runs: {}", dir.display(), supported.join(", "))]
    UnknownVariant {
        name: String,
        dir: PathBuf,
        supported: Vec<String>,
    },
    #[error("{VARIANT_ENV}={name}: this CPU lacks features that variant needs; it runs: {}", supported.join(", "))]
    UnsupportedVariant {
        name: String,
        supported: Vec<String>,
    },
    #[error("{VARIANT_ENV}={name}: refused, {reason}; this CPU runs: {}", supported.join(", "))]
    RefusedVariant {
        name: String,
        reason: &'static str,
        supported: Vec<String>,
    },
    #[error("none of the CPU backends in {} runs on this CPU ({cpu}); found: {}", dir.display(), found.join(", "))]
    NoneSupported {
        dir: PathBuf,
        cpu: String,
        found: Vec<String>,
    },
    #[error("cannot load the CPU backend {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Load the CPU backend once per process (the choice cannot change afterwards: ggml keeps
/// it registered) and return it, or why it could not be loaded. Must run before
/// `llama_backend_init`, which otherwise loads ggml's own choice.
pub fn cpu() -> Result<&'static CpuBackend, BackendError> {
    static LOADED: OnceLock<Result<CpuBackend, BackendError>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = find_dir()?;
            let wanted = std::env::var(VARIANT_ENV).unwrap_or_default();
            let mut backend = choose(&dir, wanted.trim())?;
            register(&backend.path)?;
            register_others(&dir);
            backend.ggml_features = system_info();
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `NEXUS_AI_BACKENDS_DIR`; else `backends/` next to the executable (a bundle); else the
/// folder the build put them in (`cargo run`, `cargo test`).
fn find_dir() -> Result<PathBuf, BackendError> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return match variant_files(&dir) {
            Ok(files) if !files.is_empty() => Ok(dir),
            Ok(_) => Err(BackendError::BadDir {
                dir,
                reason: format!("holds no {FILE_PREFIX}*{FILE_SUFFIX}"),
            }),
            Err(e) => Err(BackendError::BadDir {
                dir,
                reason: e.to_string(),
            }),
        };
    }
    let mut candidates = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(exe_dir.join(BUNDLE_DIR));
    }
    if let Some(built) = llama_cpp_sys_2::BACKENDS_DIR {
        candidates.push(PathBuf::from(built));
    }
    candidates
        .iter()
        .find(|d| variant_files(d).is_ok_and(|f| !f.is_empty()))
        .cloned()
        .ok_or(BackendError::NotFound {
            looked_in: candidates,
        })
}

/// `(variant, path)` of every `libggml-cpu-<variant>.so` in `dir`, sorted by name.
fn variant_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(variant) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|n| n.strip_suffix(FILE_SUFFIX))
        else {
            continue;
        };
        if entry.file_type()?.is_file() || entry.path().is_file() {
            out.push((variant.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn refusal(variant: &str) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(name, _)| *name == variant)
        .map(|(_, why)| *why)
}

/// Score every variant in `dir` (as ggml does: 0 = this CPU cannot run it, higher = better)
/// and pick `wanted`, or the best when `wanted` is empty or `auto`.
fn choose(dir: &Path, wanted: &str) -> Result<CpuBackend, BackendError> {
    let files = variant_files(dir).map_err(|e| BackendError::BadDir {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut scored = Vec::new();
    let (mut unsupported, mut refused, mut broken) = (Vec::new(), Vec::new(), Vec::new());
    for (variant, path) in files {
        if refusal(&variant).is_some() {
            refused.push(variant);
            continue;
        }
        match score(&path) {
            Ok(0) => unsupported.push(variant),
            Ok(s) => scored.push((s, variant, path)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), "skipping a CPU backend: {reason}");
                broken.push((variant, path, reason));
            }
        }
    }
    // Best first; ties (none in ggml's scores) broken by name for a stable order.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let supported: Vec<String> = scored.iter().map(|(_, v, _)| v.clone()).collect();
    let cpu_model = cpu_model();
    let forced = !(wanted.is_empty() || wanted == "auto");
    let (variant, path) = if forced {
        if let Some(reason) = refusal(wanted) {
            return Err(BackendError::RefusedVariant {
                name: wanted.to_string(),
                reason,
                supported,
            });
        }
        if unsupported.iter().any(|v| v == wanted) {
            return Err(BackendError::UnsupportedVariant {
                name: wanted.to_string(),
                supported,
            });
        }
        if let Some((_, path, reason)) = broken.into_iter().find(|(v, _, _)| v == wanted) {
            return Err(BackendError::Load { path, reason });
        }
        match scored.iter().find(|(_, v, _)| v == wanted) {
            Some((_, v, p)) => (v.clone(), p.clone()),
            None => {
                return Err(BackendError::UnknownVariant {
                    name: wanted.to_string(),
                    dir: dir.to_path_buf(),
                    supported,
                })
            }
        }
    } else {
        match scored.first() {
            Some((_, v, p)) => (v.clone(), p.clone()),
            None => {
                let mut found = unsupported.clone();
                found.extend(refused.iter().cloned());
                found.extend(broken.into_iter().map(|(v, _, _)| v));
                return Err(BackendError::NoneSupported {
                    dir: dir.to_path_buf(),
                    cpu: cpu_model,
                    found,
                });
            }
        }
    };
    Ok(CpuBackend {
        variant,
        path,
        forced,
        supported,
        unsupported,
        refused,
        cpu_model,
        ggml_features: String::new(),
    })
}

/// The variant's own verdict on this CPU (`ggml_backend_score`, compiled without the
/// variant's instruction set so it runs anywhere).
fn score(path: &Path) -> Result<i32, String> {
    type ScoreFn = unsafe extern "C" fn() -> c_int;
    // SAFETY: a ggml CPU backend's initialisers only set up static tables with baseline
    // instructions (ggml's own loader opens every variant the same way to score it).
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
    // SAFETY: `ggml_backend_score` has this signature in every ggml backend (ggml-backend-dl.h).
    let f = unsafe { lib.get::<ScoreFn>(b"ggml_backend_score\0") }.map_err(|e| e.to_string())?;
    // SAFETY: takes no arguments and only reads CPUID; the library stays open during the call.
    Ok(unsafe { f() })
}

/// Hand the chosen shared object to ggml, which opens it and registers its device.
fn register(path: &Path) -> Result<(), BackendError> {
    let load_err = |reason: String| BackendError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| load_err("the path contains a NUL byte".into()))?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call; ggml
    // copies it. The returned registration is owned by ggml for the life of the process.
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_load(c_path.as_ptr()) };
    if reg.is_null() {
        return Err(load_err(
            "ggml refused it (not a ggml backend, or built for another ggml version)".into(),
        ));
    }
    Ok(())
}

/// Other backends built beside the CPU variants (`libggml-cuda.so` with the `cuda` feature):
/// ggml scores and registers each, and skips one this machine cannot use.
fn register_others(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("libggml-")
            && name.ends_with(FILE_SUFFIX)
            && !name.starts_with(FILE_PREFIX)
        {
            if let Err(e) = register(&path) {
                tracing::info!("{e}");
            }
        }
    }
}

/// Send llama.cpp's and ggml's log lines nowhere (they go to stderr by default).
pub fn silence_logs() {
    unsafe extern "C" fn discard(
        _level: llama_cpp_sys_2::ggml_log_level,
        _text: *const std::ffi::c_char,
        _user_data: *mut std::ffi::c_void,
    ) {
    }
    // SAFETY: `discard` matches ggml_log_callback and ignores its arguments; a null user
    // pointer is allowed. llama_log_set installs it for llama.cpp and ggml alike.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(discard), std::ptr::null_mut()) }
}

/// ggml's description of the CPU backend in use: the instruction sets it was built with
/// and the features it found (`llama_print_system_info`, as llama-cpp-python prints it).
/// Called once, from `cpu()`'s initialiser: llama.cpp builds the text in a static buffer.
fn system_info() -> String {
    // SAFETY: returns a pointer to a NUL-terminated static buffer inside llama.cpp; the only
    // caller runs inside a `OnceLock` initialiser, so no other call can overwrite it meanwhile.
    let p = unsafe { llama_cpp_sys_2::llama_print_system_info() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated (above); copied before returning.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// The CPU's model name, for reports (`/proc/cpuinfo`'s first `model name`).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_dir(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::write(d.path().join(n), b"not a shared object").unwrap();
        }
        d
    }

    #[test]
    fn only_cpu_variant_files_count() {
        let d = fake_dir(&[
            "libggml-cpu-haswell.so",
            "libggml-cpu-x64.so",
            "libggml-base.so",
            "libggml-cpu-zen4.so.txt",
            "README",
        ]);
        let names: Vec<_> = variant_files(d.path())
            .unwrap()
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(names, ["haswell", "x64"]);
    }

    #[test]
    fn files_that_are_not_backends_are_skipped_and_forcing_one_says_why() {
        let d = fake_dir(&["libggml-cpu-x64.so"]);
        let e = choose(d.path(), "").unwrap_err();
        assert!(
            matches!(&e, BackendError::NoneSupported { found, .. } if found == &["x64"]),
            "{e}"
        );
        let e = choose(d.path(), "x64").unwrap_err();
        assert!(
            matches!(&e, BackendError::Load { path, .. } if path.ends_with("libggml-cpu-x64.so")),
            "{e}"
        );
    }

    #[test]
    fn a_refused_variant_is_never_chosen_and_forcing_it_says_why() {
        let d = fake_dir(&["libggml-cpu-sapphirerapids.so"]);
        let e = choose(d.path(), "sapphirerapids").unwrap_err();
        assert!(e.to_string().contains("GCC 12"), "{e}");
        let e = choose(d.path(), "").unwrap_err();
        assert!(
            matches!(&e, BackendError::NoneSupported { found, .. } if found == &["sapphirerapids"]),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_variant_names_the_folder() {
        let d = fake_dir(&[]);
        let e = choose(d.path(), "pentium4").unwrap_err();
        assert!(matches!(e, BackendError::UnknownVariant { .. }), "{e}");
        assert!(e.to_string().contains(&d.path().display().to_string()));
    }

    #[test]
    fn a_folder_without_backends_is_reported_with_the_places_looked_at() {
        let e = BackendError::NotFound {
            looked_in: vec!["/a/backends".into(), "/b".into()],
        };
        let msg = e.to_string();
        assert!(
            msg.contains("/a/backends, /b") && msg.contains("ai-bundle"),
            "{msg}"
        );
    }
}
