//! `nexus-ai bench-engine`: the engine timed directly (no service, no HTTP), one JSON
//! line per prompt. `cargo xtask bench ai` compares it with the HTTP API and llama.cpp.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

use serde_json::json;

use crate::engine::SamplingParams;

use super::args::BenchEngineArgs;
use super::commands::{load_options, open_store, CliResult};

pub fn bench_engine(a: BenchEngineArgs) -> CliResult {
    let store = open_store(&a.common)?;
    let entry = store.resolve(&a.model)?;
    let started = Instant::now();
    let mut model = crate::engine::default_engine().load(&entry.path, &load_options(&a.common))?;
    eprintln!(
        "loaded {} in {:.2}s on the {} CPU variant",
        entry.name,
        started.elapsed().as_secs_f64(),
        crate::engine::llama::cpu_backend()?.variant
    );
    // Greedy with no penalty: the same work llama.cpp's greedy sampler does.
    let params = SamplingParams {
        temperature: 0.0,
        repeat_penalty: 1.0,
        num_predict: Some(a.n),
        ..SamplingParams::default()
    };
    // `-`: one JSON string per line on stdin, answered line by line (so a caller can
    // interleave this with other measurements); otherwise a file holding a JSON list.
    let prompts: Box<dyn Iterator<Item = Result<String, Box<dyn std::error::Error>>>> =
        if a.prompts.as_os_str() == "-" {
            Box::new(
                std::io::stdin()
                    .lines()
                    .map(|l| Ok(serde_json::from_str(&l?)?)),
            )
        } else {
            let list: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&a.prompts)?)?;
            Box::new(list.into_iter().map(Ok))
        };
    let mut out = std::io::stdout().lock();
    for p in prompts {
        let p = p?;
        let t = Instant::now();
        let tokens = model.tokenize(&p, true, true)?;
        // The text, so the benchmark can check that both sides produced the same tokens.
        let mut text = String::new();
        let (finish, s) = model.generate(&tokens, &params, &mut |piece| {
            text.push_str(piece);
            ControlFlow::Continue(())
        })?;
        let wall_ns = t.elapsed().as_nanos() as u64;
        let line = json!({
            "prompt_tokens": s.prompt_tokens,
            "prompt_tokens_evaluated": s.prompt_tokens_evaluated,
            "prompt_eval_ns": s.prompt_eval_ns,
            "generated_tokens": s.generated_tokens,
            "eval_ns": s.eval_ns,
            "wall_ns": wall_ns,
            "finish": format!("{finish:?}"),
            "text": text,
            // llama_decode alone, as llama.cpp's llama_perf_context counts it.
            "compute": s.compute.map(|c| json!({
                "prompt_ns": c.prompt_ns,
                "prompt_tokens": c.prompt_tokens,
                "decode_ns": c.decode_ns,
                "decodes": c.decodes,
            })),
        });
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}
