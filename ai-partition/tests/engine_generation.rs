//! Generation behaviour of the llama.cpp engine on SmolLM2 (one thread, short outputs):
//! sampling options, stop strings, cancellation, KV-cache prefix reuse and limits.

mod reference_support;

use std::ops::ControlFlow;

use nexus_ai::engine::llama::LlamaLoaded;
use nexus_ai::engine::{EngineError, FinishReason, GenerationStats, LoadedModel, SamplingParams};
use reference_support::{fixture, ids, smollm2};

const PROMPT: &str = "The capital of France is";

fn greedy(n: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        repeat_penalty: 1.0,
        num_predict: Some(n),
        ..Default::default()
    }
}

fn run(
    m: &mut LlamaLoaded,
    prompt: &[u32],
    p: &SamplingParams,
) -> (String, FinishReason, GenerationStats) {
    let mut text = String::new();
    let (reason, stats) = m
        .generate(prompt, p, &mut |piece| {
            text.push_str(piece);
            ControlFlow::Continue(())
        })
        .unwrap();
    (text, reason, stats)
}

fn reference_continuation() -> String {
    let fx = fixture("smollm2_reference.json");
    fx["greedy"][0]["text"].as_str().unwrap().to_string()
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn num_predict_limits_and_reports_length() {
    let mut m = smollm2(256);
    let prompt = m.tokenize(PROMPT, false, false).unwrap();
    let (text, reason, stats) = run(&mut m, &prompt, &greedy(5));
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(stats.generated_tokens, 5);
    assert_eq!(stats.prompt_tokens as usize, prompt.len());
    assert_eq!(m.generated_tokens().len(), 5);
    assert_eq!(text, m.detokenize(m.generated_tokens(), false).unwrap());
    assert!(reference_continuation().starts_with(&text), "{text:?}");
    // llama.cpp's own counters: the prompt as one batch, then one decode per token
    // after the first (which comes from the prompt's logits).
    let c = stats.compute.expect("llama.cpp reports its decode timings");
    assert_eq!(c.prompt_tokens as usize, prompt.len());
    assert_eq!(c.decodes, 4);
    assert!(c.prompt_ns > 0 && c.decode_ns > 0, "{c:?}");
    // They cover llama_decode only, which the per-token loop contains.
    assert!(c.decode_ns <= stats.eval_ns, "{c:?} vs {stats:?}");
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn stop_strings_end_generation_and_are_not_emitted() {
    let mut m = smollm2(256);
    let prompt = m.tokenize(PROMPT, false, false).unwrap();
    // The reference continuation is " Paris.\n\nThe answer is: ..."; stop at "\n\nThe".
    let full = reference_continuation();
    let cut = full
        .find("\n\nThe")
        .expect("reference text has the stop string");
    let p = SamplingParams {
        stop: vec!["never-appears".into(), "\n\nThe".into()],
        ..greedy(16)
    };
    let (text, reason, _) = run(&mut m, &prompt, &p);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(text, &full[..cut]);
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn callback_break_cancels() {
    let mut m = smollm2(256);
    let prompt = m.tokenize(PROMPT, false, false).unwrap();
    let mut pieces = 0;
    let (reason, stats) = m
        .generate(&prompt, &greedy(16), &mut |_| {
            pieces += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(reason, FinishReason::Cancelled);
    assert_eq!(pieces, 1);
    assert_eq!(stats.generated_tokens, 1);
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn kv_cache_prefix_is_reused_without_changing_results() {
    let fx = fixture("smollm2_reference.json");
    let chat = &fx["greedy"][2];
    let prompt = ids(&chat["prompt_ids"]);
    let mut m = smollm2(512);

    let (first, _, s1) = run(&mut m, &prompt, &greedy(6));
    assert_eq!(s1.prompt_tokens_evaluated as usize, prompt.len());
    // The same prompt again: only the last token is evaluated (its logits are needed).
    let (again, _, s2) = run(&mut m, &prompt, &greedy(6));
    assert_eq!(s2.prompt_tokens_evaluated, 1);
    assert_eq!(again, first);
    // A longer prompt sharing the prefix: only the new suffix is evaluated.
    let mut longer = prompt.clone();
    longer.extend(
        m.tokenize(
            "Paris<|im_end|>\n<|im_start|>user\nAnd Italy?<|im_end|>\n<|im_start|>assistant\n",
            false,
            true,
        )
        .unwrap(),
    );
    let (warm, _, s3) = run(&mut m, &longer, &greedy(6));
    assert_eq!(
        s3.prompt_tokens_evaluated as usize,
        longer.len() - prompt.len()
    );
    // A diverging prompt evaluates from the first difference.
    let mut other = prompt[..prompt.len() - 3].to_vec();
    other.extend(m.tokenize("Hello", false, false).unwrap());
    let (_, _, s4) = run(&mut m, &other, &greedy(2));
    assert_eq!(
        s4.prompt_tokens_evaluated as usize,
        other.len() - (prompt.len() - 3)
    );
    // A reused cache holds exactly what evaluating the earlier prompts left: a fresh model
    // that evaluates the same pieces (the prompt, its last token again, then the suffix)
    // continues identically. A fresh model evaluating the whole prompt in one batch is not
    // compared token for token: llama.cpp picks its kernels by batch size, so the last bits
    // of the logits may differ, and a 135M model's greedy choice between near-tied tokens
    // can flip ("Rome"/"Italy" here on an AMD EPYC).
    let mut cold = smollm2(512);
    let (_, _, s5) = run(&mut cold, &prompt, &greedy(6));
    assert_eq!(s5.prompt_tokens_evaluated as usize, prompt.len());
    run(&mut cold, &prompt, &greedy(6));
    let (cold_text, _, s6) = run(&mut cold, &longer, &greedy(6));
    assert_eq!(
        s6.prompt_tokens_evaluated as usize,
        longer.len() - prompt.len()
    );
    assert_eq!(warm, cold_text);
    // And the one-batch evaluation still answers (six tokens of text).
    let mut whole = smollm2(512);
    let (whole_text, _, s7) = run(&mut whole, &longer, &greedy(6));
    assert_eq!(s7.prompt_tokens_evaluated as usize, longer.len());
    assert!(!whole_text.trim().is_empty());
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn sampling_is_seeded_and_top_k_one_is_greedy() {
    let mut m = smollm2(256);
    let prompt = m.tokenize("Once upon a time", false, false).unwrap();
    let sampled = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 40,
        top_p: 0.95,
        seed: Some(seed),
        num_predict: Some(12),
        ..Default::default()
    };
    let (a, _, _) = run(&mut m, &prompt, &sampled(7));
    let (b, _, _) = run(&mut m, &prompt, &sampled(7));
    assert_eq!(a, b, "same seed, same text");
    let texts: std::collections::BTreeSet<String> = (1..=4)
        .map(|s| run(&mut m, &prompt, &sampled(s)).0)
        .collect();
    assert!(texts.len() > 1, "different seeds all gave {texts:?}");
    // With top_k = 1 only the argmax survives, whatever the temperature.
    let top1 = SamplingParams {
        top_k: 1,
        repeat_penalty: 1.0,
        ..sampled(3)
    };
    let (k1, _, _) = run(&mut m, &prompt, &top1);
    let (g, _, _) = run(&mut m, &prompt, &greedy(12));
    assert_eq!(k1, g);
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn repeat_penalty_changes_repetitive_output() {
    let mut m = smollm2(256);
    let prompt = m
        .tokenize("one-to-one, one-to-many, many-to-many", false, false)
        .unwrap();
    // Generated tokens that already occurred in the prompt or earlier in the output.
    let repeats = |m: &LlamaLoaded| {
        let mut seen = prompt.clone();
        let mut n = 0;
        for &t in m.generated_tokens() {
            n += usize::from(seen.contains(&t));
            seen.push(t);
        }
        n
    };
    let (plain, _, _) = run(&mut m, &prompt, &greedy(8));
    let plain_repeats = repeats(&m);
    let penalised = SamplingParams {
        repeat_penalty: 1.8,
        repeat_last_n: 64,
        ..greedy(8)
    };
    let (pen, _, _) = run(&mut m, &prompt, &penalised);
    assert!(
        repeats(&m) < plain_repeats,
        "penalised {pen:?} ({} repeats) vs plain {plain:?} ({plain_repeats})",
        repeats(&m)
    );
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn limits_and_accounting() {
    let mut m = smollm2(64);
    assert_eq!(m.context_len(), 64);
    let long: Vec<u32> = std::iter::repeat_n(504, 64).collect();
    assert!(matches!(
        m.generate(&long, &greedy(1), &mut |_| ControlFlow::Continue(())),
        Err(EngineError::ContextOverflow {
            tokens: 64,
            n_ctx: 64
        })
    ));
    assert!(m
        .generate(&[49_999], &greedy(1), &mut |_| ControlFlow::Continue(()))
        .is_err());
    // Generation stops when the context is full: 4 more positions, and a last token that is
    // sampled but never needs a position.
    let prompt: Vec<u32> = std::iter::repeat_n(504, 60).collect();
    let (_, reason, stats) = run(&mut m, &prompt, &greedy(100));
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(stats.generated_tokens, 5, "{stats:?}");
    // An empty prompt only loads.
    let (text, reason, stats) = run(&mut m, &[], &greedy(10));
    assert_eq!(
        (text.as_str(), reason, stats.generated_tokens),
        ("", FinishReason::Stop, 0)
    );
    // Weights (98 MB file) and the KV cache, all in host memory (no layer offloaded).
    let mem = m.memory();
    assert!(mem.weights > 90_000_000 && mem.kv_cache > 0, "{mem:?}");
    assert_eq!(mem.vram(), 0, "{mem:?}");
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn engine_trait_loads_through_the_store() {
    let store = nexus_ai::models::ModelStore::open_default().unwrap();
    let stored = store.resolve("smollm2").unwrap();
    assert_eq!(stored.name.to_string(), "smollm2:135m");
    assert_eq!(stored.details.family, "llama");
    assert_eq!(stored.details.quantization_level, "Q4_1");
    assert_eq!(stored.details.context_length, Some(8192));
    assert_eq!(stored.details.parameter_size, "134.52M");
    assert!(stored
        .details
        .chat_template
        .as_deref()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(stored.metadata["llama.block_count"], 30);
    assert_eq!(stored.metadata["tokenizer.ggml.add_bos_token"], false);
    let engine = nexus_ai::engine::engine_for(stored.kind);
    assert_eq!(engine.name(), "llama.cpp");
    let opts = nexus_ai::engine::LoadOptions {
        n_ctx: 128,
        n_threads: 1,
        n_gpu_layers: 0,
        n_parallel: 1,
    };
    let mut model = engine.load(&stored.path, &opts).unwrap();
    let chat = model
        .apply_chat_template(
            &[nexus_ai::engine::ChatMessage {
                role: "user".into(),
                content: "What is the capital of France?".into(),
            }],
            true,
        )
        .unwrap();
    let prompt = model.tokenize(&chat, false, true).unwrap();
    let fx = fixture("smollm2_reference.json");
    assert_eq!(prompt, ids(&fx["greedy"][2]["prompt_ids"]));
    // Continue the raw-text prompt whose first reference tokens are far from any tie (the
    // chat prompt's first token is a near-tie that batch sizes can flip).
    let prompt = ids(&fx["greedy"][0]["prompt_ids"]);
    let mut text = String::new();
    let (reason, _) = model
        .generate(&prompt, &greedy(4), &mut |p| {
            text.push_str(p);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(reason, FinishReason::Length);
    assert!(reference_continuation().starts_with(&text), "{text:?}");
    assert_eq!(text, " Paris.\n\n");
    assert!(matches!(
        engine.load(std::path::Path::new("/nonexistent.gguf"), &opts),
        Err(EngineError::Load { .. })
    ));
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn batched_sequences_give_their_solo_greedy_output() {
    use nexus_ai::engine::SeqEvent;
    let texts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "Water boils at",
        "1, 2, 3, 4,",
    ];
    let mut solo_model = smollm2(256);
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| solo_model.tokenize(t, false, false).unwrap())
        .collect();
    // Penalised greedy (the sampler chain) for two, plain argmax for the others.
    let params = |i: usize| SamplingParams {
        repeat_penalty: if i.is_multiple_of(2) { 1.0 } else { 1.1 },
        ..greedy(20)
    };
    let solo: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| run(&mut solo_model, p, &params(i)).0)
        .collect();

    let opts = nexus_ai::engine::LoadOptions {
        n_ctx: 256,
        n_threads: 1,
        n_gpu_layers: 0,
        n_parallel: 4,
    };
    let mut m = LlamaLoaded::load(&reference_support::model_path("smollm2:135m"), &opts).unwrap();
    assert_eq!((m.slots(), m.context_len()), (4, 256));
    let mut out = vec![String::new(); 4];
    let mut done = vec![None; 4];
    let mut slot_of = vec![usize::MAX; 4];
    fn step(
        m: &mut LlamaLoaded,
        out: &mut [String],
        done: &mut [Option<FinishReason>],
        slot_of: &[usize],
    ) {
        m.step(&mut |slot, ev| {
            let Some(i) = slot_of.iter().position(|&s| s == slot) else {
                return ControlFlow::Continue(());
            };
            match ev {
                SeqEvent::Piece(p) => out[i].push_str(p),
                SeqEvent::Done(r) => done[i] = Some(r.unwrap().0),
            }
            ControlFlow::Continue(())
        });
    }
    // Staggered starts: later prompts are evaluated while earlier ones decode.
    slot_of[0] = m.start(&prompts[0], &params(0)).unwrap();
    slot_of[1] = m.start(&prompts[1], &params(1)).unwrap();
    for _ in 0..3 {
        step(&mut m, &mut out, &mut done, &slot_of);
    }
    slot_of[2] = m.start(&prompts[2], &params(2)).unwrap();
    step(&mut m, &mut out, &mut done, &slot_of);
    slot_of[3] = m.start(&prompts[3], &params(3)).unwrap();
    assert_eq!(m.slots_busy(), 4);
    assert!(matches!(
        m.start(&prompts[0], &params(0)),
        Err(EngineError::InvalidRequest(e)) if e.contains("busy")
    ));
    while done.iter().any(Option::is_none) {
        step(&mut m, &mut out, &mut done, &slot_of);
    }
    assert_eq!(out, solo);
    assert!(done.iter().all(|d| *d == Some(FinishReason::Length)));
    assert_eq!(m.slots_busy(), 0);
}
