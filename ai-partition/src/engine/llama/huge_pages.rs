//! Model weights in transparent huge pages.
//!
//! Decoding a small model reads every weight once per token, so TLB misses on 4 KiB pages
//! cost a few percent. This machine kind's kernel gives huge pages only to memory that asks
//! for them (THP `madvise` mode) and llama.cpp never asks; glibc's malloc does when started
//! with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (read once, at process start). So the
//! binary restarts itself once with that tunable, and models are loaded into malloc'd
//! memory instead of being mmapped from the file. Measured in docs/ai-models.md.
//! `NEXUS_AI_HUGEPAGES=0` turns both off.

const TUNABLE: &str = "glibc.malloc.hugetlb";

/// Whether models should be loaded into (huge-page) heap memory rather than mmapped.
pub fn wanted() -> bool {
    std::env::var_os("NEXUS_AI_HUGEPAGES").is_none_or(|v| v != "0")
}

/// Restart this process with the glibc tunable set, unless it is already set or huge pages
/// are turned off. Returns only if nothing was done or the restart failed (then the process
/// simply runs on 4 KiB pages).
#[cfg(target_os = "linux")]
pub fn reexec_with_huge_pages() {
    use std::os::unix::process::CommandExt;

    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if !wanted() || current.contains(TUNABLE) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let value = match current.as_str() {
        "" => format!("{TUNABLE}=1"),
        other => format!("{other}:{TUNABLE}=1"),
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    // `exec` only returns on failure; the new image sees the tunable and does not restart.
    let err = cmd.args(args).env("GLIBC_TUNABLES", value).exec();
    eprintln!("nexus-ai: cannot restart with huge pages ({err}); running without them");
}

#[cfg(not(target_os = "linux"))]
pub fn reexec_with_huge_pages() {}
