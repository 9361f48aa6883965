//! The official `ollama` and `openai` Python clients against a real `nexus-ai serve`
//! (ai-partition/clients/check_clients.py), with real SmolLM2 and MiniLM.
//!
//! Needs the virtual environment that `cargo xtask pyenv` (part of `cargo xtask test`)
//! creates in build/pyenv, and the models (`cargo xtask models fetch`); so it is ignored
//! in a plain `cargo test` and run by `cargo xtask test` with `--ignored`.

mod service_support;

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nexus_ai::engine::{ChatMessage, LoadOptions, SamplingParams};
use nexus_ai::models::ModelStore;
use serde_json::json;

const PROMPT: &str = "Name three colours of the rainbow.";
const N: u32 = 10;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copy a directory tree as hard links (same filesystem) or copies, so the server can
/// delete models without touching the real models directory.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            link_tree(&e.path(), &dst);
        } else if std::fs::hard_link(e.path(), &dst).is_err() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn greedy(store: &ModelStore, params: &SamplingParams) -> String {
    let path = store.resolve("smollm2").unwrap().path;
    let opts = LoadOptions {
        n_ctx: 512,
        n_threads: 1,
        ..Default::default()
    };
    let mut m = nexus_ai::engine::default_engine()
        .load(&path, &opts)
        .unwrap();
    let msgs = [ChatMessage {
        role: "user".into(),
        content: PROMPT.into(),
    }];
    let prompt = m.apply_chat_template(&msgs, true).unwrap();
    let tokens = m.tokenize(&prompt, true, true).unwrap();
    let mut out = String::new();
    m.generate(&tokens, params, &mut |p| {
        out.push_str(p);
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `nexus-ai serve` on a free loopback port; returns it and its base URL.
fn start_server(models: &Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-ai"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--threads",
            "1",
            "--ctx",
            "512",
            "--models-dir",
        ])
        .arg(models)
        .env("NEXUS_AI_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nexus-ai serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(url.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not report its address");
    (server, url)
}

#[test]
#[ignore = "needs build/pyenv (cargo xtask pyenv) and the models (cargo xtask models fetch); run by cargo xtask test"]
fn official_python_clients_work_against_nexus_ai_serve() {
    let python = root().join("build/pyenv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask pyenv` (or `cargo xtask test`, which creates it)",
        python.display()
    );
    let store = ModelStore::open_default().unwrap();
    for m in ["smollm2", "all-minilm"] {
        store
            .resolve(m)
            .unwrap_or_else(|e| panic!("{e}: run `cargo xtask models fetch`"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    link_tree(store.dir(), &models);

    let ollama = SamplingParams {
        temperature: 0.0,
        num_predict: Some(N),
        ..Default::default()
    };
    let openai = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        repeat_penalty: 1.0,
        num_predict: Some(N),
        ..Default::default()
    };
    let expect = json!({
        "prompt": PROMPT,
        "num_predict": N,
        "greedy": greedy(&store, &ollama),
        "greedy_openai": greedy(&store, &openai),
    });
    let expect_path = tmp.path().join("expect.json");
    std::fs::write(&expect_path, expect.to_string()).unwrap();

    let (_server, url) = start_server(&models);
    let out = Command::new(&python)
        .arg(root().join("ai-partition/clients/check_clients.py"))
        .args(["--host", &url, "--expect"])
        .arg(&expect_path)
        .output()
        .expect("run the Python client checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "Python client checks failed:\n{stdout}"
    );
    assert!(stdout.contains(" client checks passed"));
    // The real models directory is untouched by the delete check.
    assert!(store.resolve("all-minilm").is_ok());
}
