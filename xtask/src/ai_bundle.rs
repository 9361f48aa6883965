//! `cargo xtask ai-bundle`: `build/ai/`, the AI services as one relocatable folder (what the
//! AI partition's image carries):
//!
//! ```text
//! build/ai/nexus-ai        the binary; finds lib/ through its $ORIGIN run path
//! build/ai/lib/            the llama.cpp libraries it needs (libllama, libggml, libggml-base)
//! build/ai/backends/       ggml's CPU kernels, one libggml-cpu-<variant>.so per x86-64
//!                          feature level; nexus-ai loads the best one this CPU runs
//! ```
//!
//! Variants nexus-ai refuses (the AMX one, which GCC 12 miscompiles) are left out. The
//! folder is checked by running `nexus-ai info` from it with no library path set.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, cmd, paths, prereqs};

/// The bundle's folder.
pub fn dir() -> PathBuf {
    paths::root().join("build").join("ai")
}

/// What `cargo build --release -p nexus-ai` produced.
pub struct Built {
    pub exe: PathBuf,
    /// llama-cpp-sys-2's OUT_DIR: `lib/` has the shared libraries, `backends/` the variants,
    /// `build/` CMake's build tree.
    pub llama_out: PathBuf,
}

fn build_release() -> Result<Built> {
    prereqs::ensure("building the AI crate (llama.cpp)", prereqs::AI_BUILD)?;
    cmd::step(
        "building nexus-ai (release; the first build compiles llama.cpp and its CPU variants: \
         tens of minutes on 2 cores)…",
    );
    let mut c = cargo::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "nexus-ai",
        "--bin",
        "nexus-ai",
        "--message-format=json-render-diagnostics",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let line = cmd::describe(&c);
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let (mut exe, mut llama_out) = (None, None);
    for l in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(v) = serde_json::from_str::<Value>(&l?) else {
            continue; // a build script's stray output
        };
        match v["reason"].as_str() {
            Some("compiler-artifact") if v["target"]["name"] == "nexus-ai" => {
                exe = v["executable"].as_str().map(PathBuf::from).or(exe);
            }
            Some("build-script-executed")
                if v["package_id"]
                    .as_str()
                    .is_some_and(|id| id.contains("llama-cpp-sys-2")) =>
            {
                llama_out = v["out_dir"].as_str().map(PathBuf::from);
            }
            _ => {}
        }
    }
    if !child.wait()?.success() {
        bail!("`{line}` failed; the compiler's messages are above");
    }
    Ok(Built {
        exe: exe.with_context(|| format!("`{line}` reported no nexus-ai executable"))?,
        llama_out: llama_out
            .with_context(|| format!("`{line}` reported no llama-cpp-sys-2 build output"))?,
    })
}

/// Build nexus-ai and lay out `build/ai/`; returns the bundled binary's path (as `exe`).
pub fn build() -> Result<Built> {
    let built = build_release()?;
    let root = dir();
    cmd::step(&format!("laying out {}…", root.display()));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("cannot empty {}", root.display()))?;
    }
    let (lib, backends) = (root.join("lib"), root.join("backends"));
    fs::create_dir_all(&lib)?;
    fs::create_dir_all(&backends)?;
    let exe = root.join("nexus-ai");
    copy(&built.exe, &exe)?;

    // The libraries the binary needs, directly or through each other, under the names it
    // asks for (`libllama.so.0`): the files behind CMake's symlinks, copied as plain files.
    // Others built beside them (libllama-common, which needs OpenSSL) stay out.
    let built_libs = built.llama_out.join("lib");
    let mut wanted = needed(&exe)?;
    let mut libs = 0;
    while let Some(name) = wanted.pop() {
        let (from, to) = (built_libs.join(&name), lib.join(&name));
        if !from.is_file() || to.exists() {
            continue; // a system library, or copied already
        }
        copy(&from, &to)?;
        libs += 1;
        wanted.extend(needed(&to)?);
    }
    if libs == 0 {
        bail!(
            "nexus-ai needs none of the libraries in {}: is llama-cpp-sys-2 built with `dynamic-backends`?",
            built_libs.display()
        );
    }
    for entry in fs::read_dir(built.llama_out.join("backends"))
        .with_context(|| format!("cannot list {}/backends", built.llama_out.display()))?
    {
        // The CPU variants, and any other backend built (libggml-cuda.so with `cuda`).
        let path = entry?.path();
        if file_name(&path).starts_with("libggml-") {
            copy(&path, &backends.join(file_name(&path)))?;
        }
    }

    // Drop what nexus-ai would refuse to load, by its own list.
    let report = info(&exe, None)?;
    for v in report["cpu_backend"]["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let so = backends.join(format!("libggml-cpu-{v}.so"));
        fs::remove_file(&so).with_context(|| format!("cannot remove {}", so.display()))?;
        eprintln!("    left out {v}: nexus-ai refuses it (see `nexus-ai info`)");
    }
    let report = info(&exe, None)?;
    let b = &report["cpu_backend"];
    let loaded = PathBuf::from(b["path"].as_str().unwrap_or_default());
    if !loaded.starts_with(&backends) {
        bail!(
            "the bundled nexus-ai loaded {} instead of a variant from {}",
            loaded.display(),
            backends.display()
        );
    }
    print_layout(&root)?;
    eprintln!(
        "    this CPU ({}) gets the {} variant; it runs: {}",
        b["cpu_model"].as_str().unwrap_or("?"),
        b["variant"].as_str().unwrap_or("?"),
        b["supported"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Built {
        exe,
        llama_out: built.llama_out,
    })
}

/// `nexus-ai info --json` run from the bundle as it would run anywhere: no library path,
/// no backend folder set; `variant` forces a CPU variant (`None`: the best for this CPU).
pub fn info(exe: &Path, variant: Option<&str>) -> Result<Value> {
    let mut c = Command::new(exe);
    c.args(["info", "--json"])
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("NEXUS_AI_BACKENDS_DIR")
        .env("NEXUS_AI_CPU_VARIANT", variant.unwrap_or_default());
    let out = cmd::output(&mut c)?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`{} info --json` printed invalid JSON", exe.display()))
}

/// The shared libraries an ELF file names as NEEDED (`readelf -d`, from binutils, which
/// the C++ toolchain that builds llama.cpp brings).
fn needed(elf: &Path) -> Result<Vec<String>> {
    let out = cmd::output(Command::new("readelf").arg("-d").arg(elf))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            l.split_once('[')?
                .1
                .split_once(']')
                .map(|(n, _)| n.to_string())
        })
        .collect())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Copies the file behind `from` (following symlinks).
fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn print_layout(root: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for sub in ["", "lib", "backends"] {
        let d = root.join(sub);
        let mut names: Vec<_> = fs::read_dir(&d)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        names.sort();
        rows.extend(names);
    }
    let mut total = 0;
    for p in rows {
        let len = fs::metadata(&p)?.len();
        total += len;
        eprintln!(
            "    {:<40} {:>10} bytes",
            p.strip_prefix(root).unwrap_or(&p).display(),
            len
        );
    }
    eprintln!("    {} holds {total} bytes", root.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn needed_lists_the_libraries_an_elf_file_names() {
        let me = std::env::current_exe().unwrap();
        let libs = super::needed(&me).unwrap();
        assert!(libs.iter().any(|l| l.starts_with("libc.so.")), "{libs:?}");
        assert!(super::needed(std::path::Path::new("/nonexistent")).is_err());
    }
}
