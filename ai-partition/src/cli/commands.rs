//! `run`, `list`, `pull`: in-process, through the same service the server uses.

use std::io::Write;

use crate::engine::{ChatMessage, LoadOptions, SamplingParams};
use crate::models::ModelStore;
use crate::service::{GenEvent, GenerateJob, KeepAlive, Prompt, Service, ServiceConfig};

use super::args::{CommonArgs, PullArgs, RunArgs};

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

pub fn open_store(c: &CommonArgs) -> Result<ModelStore, Box<dyn std::error::Error>> {
    let store = match &c.models_dir {
        Some(d) => ModelStore::open(d)?,
        None => ModelStore::open_default()?,
    };
    Ok(match &c.pkg_cache {
        Some(p) => store.with_package_cache(p),
        None => store,
    })
}

pub fn load_options(c: &CommonArgs) -> LoadOptions {
    LoadOptions {
        n_ctx: c.ctx,
        n_threads: c.threads,
        n_gpu_layers: c.gpu_layers,
        ..LoadOptions::default()
    }
}

pub async fn run(a: RunArgs) -> CliResult {
    let store = open_store(&a.common)?;
    let config = ServiceConfig {
        load: load_options(&a.common),
        default_keep_alive: KeepAlive::Forever,
        ..ServiceConfig::default()
    };
    let service = Service::with_store(store, config);
    let mut params = SamplingParams::default();
    if let Some(t) = a.temperature {
        params.temperature = t;
    }
    params.seed = a.seed;
    params.num_predict = a.num_predict;
    let job = GenerateJob {
        model: a.model.clone(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        }]),
        params,
        keep_alive: None,
        stream: true,
    };
    let mut g = service.generate(job).await?;
    let mut out = std::io::stdout().lock();
    while let Some(ev) = g.events.recv().await {
        match ev {
            GenEvent::Piece(p) => {
                out.write_all(p.as_bytes())?;
                out.flush()?;
            }
            GenEvent::Done(r) => {
                let d = r?;
                writeln!(out)?;
                if a.stats {
                    let tps = |n: u32, ns: u64| {
                        if ns == 0 {
                            0.0
                        } else {
                            f64::from(n) * 1e9 / ns as f64
                        }
                    };
                    eprintln!(
                        "load {:.2}s, prompt {} tokens ({:.1} tok/s), generated {} tokens ({:.1} tok/s), {:?}",
                        d.load_duration.as_secs_f64(),
                        d.stats.prompt_tokens,
                        tps(d.stats.prompt_tokens_evaluated, d.stats.prompt_eval_ns),
                        d.stats.generated_tokens,
                        tps(d.stats.generated_tokens, d.stats.eval_ns),
                        d.finish
                    );
                }
            }
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.0} MB", b / 1e6)
    }
}

pub async fn list(c: CommonArgs) -> CliResult {
    let store = open_store(&c)?;
    let service = Service::with_store(store, ServiceConfig::default());
    let models = service.list().await?;
    println!(
        "{:<28} {:<14} {:>8}  {:<10} {:<8}",
        "NAME", "ID", "SIZE", "PARAMS", "QUANT"
    );
    for m in models {
        let id: String = m
            .digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        println!(
            "{:<28} {:<14} {:>8}  {:<10} {:<8}",
            m.name,
            id,
            human(m.size),
            m.details.parameter_size,
            m.details.quantization_level
        );
    }
    Ok(())
}

pub async fn pull(a: PullArgs) -> CliResult {
    let store = open_store(&a.common)?;
    let service = Service::with_store(store, ServiceConfig::default());
    let mut rx = service.pull(&a.model);
    let mut last_line_was_bar = false;
    while let Some(item) = rx.recv().await {
        let p = item?;
        match (p.total, p.completed) {
            (Some(total), Some(done)) if total > 0 => {
                let pct = done as f64 * 100.0 / total as f64;
                let width = 30;
                let filled = ((pct / 100.0) * width as f64) as usize;
                eprint!(
                    "\r{} [{}{}] {:>5.1}% of {}",
                    p.status,
                    "#".repeat(filled),
                    " ".repeat(width - filled),
                    pct,
                    human(total)
                );
                last_line_was_bar = true;
            }
            _ => {
                if last_line_was_bar {
                    eprintln!();
                    last_line_was_bar = false;
                }
                eprintln!("{}", p.status);
            }
        }
    }
    Ok(())
}
