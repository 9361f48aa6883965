//! Runs an emulator as a child process under a deadline, collecting its console output.
//!
//! Shared by the QEMU and Bochs runners: output is read line by line from the child's stdout,
//! cleaned, optionally echoed live and written to a transcript file; a child still running at
//! the deadline is killed by its own pid, so a hang ends in a clear error instead of a stuck test.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::transcript::{clean_line, Transcript};

/// How to watch a child process.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Kill the child when it has not exited after this long.
    pub timeout: Duration,
    /// Print each console line to this process's stdout as it arrives.
    pub echo: bool,
    /// Also write the cleaned lines to this file (created or truncated).
    pub log: Option<PathBuf>,
}

/// How a watched child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Exited(ExitStatus),
    /// Still running at the deadline; it was killed.
    TimedOut,
}

/// Everything a watched run produced.
#[derive(Debug, Clone)]
pub struct Watched {
    pub finish: Finish,
    pub transcript: Transcript,
    /// When each transcript line arrived, measured from the child's start (same length as
    /// the transcript): boot-time measurements read the time of a marker line from here.
    pub line_times: Vec<Duration>,
    /// The child's stderr, collected whole (emulators report setup errors there).
    pub stderr: String,
    pub elapsed: Duration,
}

/// Spawns `cmd` (stdin closed, stdout and stderr piped) and watches it until it exits or the
/// timeout passes.
pub fn run_watched(cmd: Command, opts: &WatchOptions) -> io::Result<Watched> {
    run_watched_with(cmd, opts, &mut |_, _| {})
}

/// As [`run_watched`], calling `on_line(arrival, line)` for each line as it arrives (progress
/// reports while a long boot runs).
pub fn run_watched_with(
    mut cmd: Command,
    opts: &WatchOptions,
    on_line: &mut dyn FnMut(Duration, &str),
) -> io::Result<Watched> {
    let mut log = match &opts.log {
        Some(path) => Some(File::create(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create transcript file {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", describe(&cmd))))?;

    // Lines travel through a channel so that the deadline is kept even while output is quiet;
    // each is stamped when read, not when the watcher gets to it.
    let (tx, rx) = mpsc::channel::<(Duration, String)>();
    let stdout = child.stdout.take().expect("stdout is piped");
    let out_reader = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        // read_until keeps going through invalid UTF-8, which firmware sometimes prints.
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = clean_line(&String::from_utf8_lossy(&buf));
            buf.clear();
            if tx.send((start.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    // A timeout too large to add means no deadline.
    let deadline = start.checked_add(opts.timeout);
    let mut lines = Vec::new();
    let mut times = Vec::new();
    let finish = loop {
        // Drain what has arrived, then check the child.
        while let Ok((at, line)) = rx.recv_timeout(Duration::from_millis(20)) {
            record(&line, opts.echo, log.as_mut());
            on_line(at, &line);
            lines.push(line);
            times.push(at);
        }
        if let Some(status) = child.try_wait()? {
            break Finish::Exited(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            kill(&mut child);
            break Finish::TimedOut;
        }
    };
    let elapsed = start.elapsed();
    // The pipe closes when the child is gone; collect the rest of its output.
    let _ = out_reader.join();
    for (at, line) in rx.try_iter() {
        record(&line, opts.echo, log.as_mut());
        on_line(at, &line);
        lines.push(line);
        times.push(at);
    }
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Watched {
        finish,
        transcript: Transcript::from_lines(lines),
        line_times: times,
        stderr,
        elapsed,
    })
}

fn record(line: &str, echo: bool, log: Option<&mut File>) {
    if echo {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Some(f) = log {
        let _ = writeln!(f, "{line}");
    }
}

/// Kills the child by its pid (SIGKILL) and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A command line as a user could paste it.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn opts(timeout_ms: u64) -> WatchOptions {
        WatchOptions {
            timeout: Duration::from_millis(timeout_ms),
            echo: false,
            log: None,
        }
    }

    #[test]
    fn collects_lines_stderr_and_exit_status() {
        let w = run_watched(
            sh("printf 'a\\r\\nb\\n'; echo oops >&2; exit 33"),
            &opts(10_000),
        )
        .unwrap();
        assert_eq!(w.transcript.lines(), ["a", "b"]);
        assert_eq!(w.stderr, "oops\n");
        match w.finish {
            Finish::Exited(s) => assert_eq!(s.code(), Some(33)),
            Finish::TimedOut => panic!("did not time out"),
        }
    }

    #[test]
    fn stamps_each_line_when_it_arrives_and_reports_it() {
        let mut seen = Vec::new();
        let w = run_watched_with(
            sh("echo first; sleep 0.3; echo second"),
            &opts(10_000),
            &mut |at, line| seen.push((at, line.to_string())),
        )
        .unwrap();
        assert_eq!(w.transcript.lines(), ["first", "second"]);
        assert_eq!(w.line_times.len(), 2);
        let gap = w.line_times[1] - w.line_times[0];
        assert!(gap >= Duration::from_millis(250), "{gap:?}");
        assert!(w.line_times[1] <= w.elapsed);
        let names: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(seen[1].0, w.line_times[1]);
    }

    #[test]
    fn a_timeout_too_large_for_a_deadline_means_none() {
        let w = run_watched(sh("echo done"), &opts(u64::MAX)).unwrap();
        assert!(matches!(w.finish, Finish::Exited(s) if s.success()));
    }

    #[test]
    fn kills_a_hung_child_and_keeps_what_it_printed() {
        let w = run_watched(sh("echo before; exec sleep 30"), &opts(300)).unwrap();
        assert_eq!(w.finish, Finish::TimedOut);
        assert_eq!(w.transcript.lines(), ["before"]);
        assert!(
            w.elapsed < Duration::from_secs(30),
            "the child was not killed"
        );
    }

    #[test]
    fn writes_the_transcript_file() {
        let path = std::env::temp_dir().join(format!("nexus-e2e-log-{}.txt", std::process::id()));
        let o = WatchOptions {
            log: Some(path.clone()),
            ..opts(10_000)
        };
        run_watched(sh("printf 'x\\033[2Jy\\n'"), &o).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "xy\n");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn reports_a_missing_program_by_name() {
        let err = run_watched(Command::new("/nonexistent/qemu"), &opts(1000)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/qemu"), "{err}");
    }

    #[test]
    fn quotes_arguments_that_need_it() {
        let mut c = Command::new("qemu");
        c.args(["-m", "2G", "a b", "it's"]);
        assert_eq!(describe(&c), r"qemu -m 2G 'a b' 'it'\''s'");
    }
}
