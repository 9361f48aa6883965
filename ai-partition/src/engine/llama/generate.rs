//! One generation: reuse the KV cache for the prompt prefix shared with the previous call,
//! evaluate the rest, then sample token by token. The per-token loop reuses the batch,
//! piece and text buffers, so it does not allocate once they have grown.

use std::ops::ControlFlow;
use std::time::Instant;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::LlamaLoaded;
use crate::engine::stream::Release;
use crate::engine::{ComputeTimings, EngineError, FinishReason, GenerationStats, SamplingParams};

pub(super) fn run(
    m: &mut LlamaLoaded,
    prompt: &[u32],
    params: &SamplingParams,
    on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<(FinishReason, GenerationStats), EngineError> {
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len() as u32,
        ..Default::default()
    };
    // An empty prompt only loads the model (Ollama's convention).
    if prompt.is_empty() {
        return Ok((FinishReason::Stop, stats));
    }
    let n_ctx = m.n_ctx as usize;
    if prompt.len() >= n_ctx {
        return Err(EngineError::ContextOverflow {
            tokens: prompt.len(),
            n_ctx: m.n_ctx,
        });
    }
    let LlamaLoaded {
        owned,
        cached,
        batch,
        n_batch,
        piece,
        stream,
        generated,
        ..
    } = m;
    generated.clear();
    let (model, ctx) = owned.split();
    let vocab = model.vocab();
    let n_vocab = vocab.n_tokens();
    if let Some(&bad) = prompt.iter().find(|&&t| t as i64 >= i64::from(n_vocab)) {
        return Err(EngineError::Inference(format!(
            "prompt token {bad} is outside the vocabulary of {n_vocab}"
        )));
    }

    // Keep the longest cached prefix; at least one token must be evaluated to get logits.
    let mut keep = cached
        .iter()
        .zip(prompt)
        .take_while(|(c, &p)| c.0 as u32 == p)
        .count();
    if keep == prompt.len() {
        keep -= 1;
    }
    if keep < cached.len() {
        if ctx.kv_cache_seq_rm(0, Some(keep as u32), None).is_err() {
            ctx.clear_kv_cache();
            keep = 0;
        }
        cached.truncate(keep);
    }

    ctx.reset_timings();
    let started = Instant::now();
    let rest = &prompt[keep..];
    for (i, chunk) in rest.chunks(*n_batch as usize).enumerate() {
        let last_chunk = (i + 1) * (*n_batch as usize) >= rest.len();
        batch.clear();
        for (j, &t) in chunk.iter().enumerate() {
            let want_logits = last_chunk && j + 1 == chunk.len();
            batch
                .add(LlamaToken(t as i32), cached.len() as i32, &[0], want_logits)
                .map_err(|e| EngineError::Inference(e.to_string()))?;
            cached.push(LlamaToken(t as i32));
        }
        if let Err(e) = ctx.decode(batch) {
            // The cache no longer matches `cached`; start clean next time.
            ctx.clear_kv_cache();
            cached.clear();
            return Err(EngineError::Inference(format!(
                "prompt evaluation failed: {e}"
            )));
        }
    }
    stats.prompt_tokens_evaluated = rest.len() as u32;
    stats.prompt_eval_ns = started.elapsed().as_nanos() as u64;

    let mut picker = Picker::new(params, n_vocab, prompt);

    let started = Instant::now();
    stream.reset(&params.stop);
    let max_new = params.num_predict.map_or(u64::MAX, u64::from);
    let mut logits_idx = batch.n_tokens() - 1;
    let reason = loop {
        if u64::from(stats.generated_tokens) >= max_new {
            break FinishReason::Length;
        }
        let token = match &mut picker {
            Picker::Argmax => argmax(ctx.get_logits_ith(logits_idx)),
            Picker::Sampler(s) => s.sample(ctx, logits_idx),
        };
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        stats.generated_tokens += 1;
        generated.push(token.0 as u32);
        piece.clear();
        vocab.token_to_piece_into(token, piece, false, None);
        match stream.push(piece) {
            Release::Text(text) => {
                if !text.is_empty() && on_piece(text).is_break() {
                    break FinishReason::Cancelled;
                }
            }
            Release::Stop(text) => {
                if !text.is_empty() {
                    let _ = on_piece(text);
                }
                stats.eval_ns = started.elapsed().as_nanos() as u64;
                stats.compute = Some(compute_timings(ctx));
                return Ok((FinishReason::Stop, stats));
            }
        }
        if u64::from(stats.generated_tokens) >= max_new || cached.len() >= n_ctx {
            break FinishReason::Length;
        }
        batch.clear();
        batch
            .add(token, cached.len() as i32, &[0], true)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        if let Err(e) = ctx.decode(batch) {
            ctx.clear_kv_cache();
            cached.clear();
            return Err(EngineError::Inference(format!("decoding failed: {e}")));
        }
        cached.push(token);
        logits_idx = 0;
    };
    let mut reason = reason;
    if reason != FinishReason::Cancelled {
        let tail = stream.finish();
        if !tail.is_empty() && on_piece(tail).is_break() {
            reason = FinishReason::Cancelled;
        }
    }
    stats.eval_ns = started.elapsed().as_nanos() as u64;
    stats.compute = Some(compute_timings(ctx));
    Ok((reason, stats))
}

/// llama.cpp's counters since `reset_timings` (the start of this generation).
fn compute_timings(ctx: &mut llama_cpp_2::context::LlamaContext) -> ComputeTimings {
    let t = ctx.timings();
    let ns = |ms: f64| (ms * 1e6) as u64;
    ComputeTimings {
        prompt_ns: ns(t.t_p_eval_ms()),
        prompt_tokens: t.n_p_eval().max(0) as u32,
        decode_ns: ns(t.t_eval_ms()),
        decodes: t.n_eval().max(0) as u32,
    }
}

/// How the next token is chosen.
enum Picker {
    /// Plain greedy decoding: the argmax of the logits, read in place (llama.cpp's sampler
    /// would first copy all 49k candidates for every token).
    Argmax,
    Sampler(LlamaSampler),
}

impl Picker {
    fn new(p: &SamplingParams, n_vocab: i32, prompt: &[u32]) -> Self {
        let penalty = p.repeat_penalty != 1.0 && p.repeat_last_n > 0;
        // top_k = 1 keeps only the best token, so temperature and the draw cannot change it.
        if (p.temperature <= 0.0 || p.top_k == 1) && !penalty {
            return Picker::Argmax;
        }
        let mut sampler = build_sampler(p, n_vocab);
        // The repeat penalty looks back over the prompt too, as llama.cpp's server does.
        let look_back = (p.repeat_last_n as usize).min(prompt.len());
        sampler.accept_many(
            prompt[prompt.len() - look_back..]
                .iter()
                .map(|&t| LlamaToken(t as i32)),
        );
        Picker::Sampler(sampler)
    }
}

/// Index of the first largest logit (llama.cpp's greedy sampler breaks ties the same way).
/// Two passes: a lane-wise maximum the compiler vectorises, then the first position that
/// holds it (a compare-and-branch over 49k logits is one long dependent chain). NaNs are
/// never picked; all -inf (or NaN) gives 0.
fn argmax(logits: &[f32]) -> LlamaToken {
    const LANES: usize = 16;
    let larger = |m: f32, l: f32| if l > m { l } else { m };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            *m = larger(*m, l);
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &l| larger(m, l));
    LlamaToken(logits.iter().position(|&l| l == max).unwrap_or(0) as i32)
}

/// llama.cpp sampler chain in Ollama's order: repeat penalty, top-k, top-p, temperature,
/// random draw; temperature 0 means argmax (after the penalty).
fn build_sampler(p: &SamplingParams, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::with_capacity(5);
    if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            p.repeat_last_n.min(i32::MAX as u32) as i32,
            p.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k.min(i32::MAX as u32) as i32));
        }
        if p.top_p > 0.0 && p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(seed(p.seed)));
    }
    LlamaSampler::chain_simple(chain)
}

/// The caller's seed, or a fresh one per generation.
fn seed(s: Option<u64>) -> u32 {
    match s {
        // Fold 64 bits into llama.cpp's 32-bit seed.
        Some(s) => (s ^ (s >> 32)) as u32,
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (t ^ (t >> 32) ^ u64::from(std::process::id())) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    /// The plain definition: first index whose value no other value exceeds.
    fn reference(v: &[f32]) -> i32 {
        let mut best = 0;
        for (i, &l) in v.iter().enumerate() {
            if l > v[best] {
                best = i;
            }
        }
        best as i32
    }

    #[test]
    fn argmax_matches_the_plain_definition() {
        // Lengths around the lane width, maxima in the body and in the tail, ties.
        let mut seed = 0x2545_f491_u32;
        for len in [1, 15, 16, 17, 31, 33, 100, 49_152] {
            for _ in 0..20 {
                let v: Vec<f32> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        // Few distinct values, so ties are common.
                        (seed % 64) as f32 - 40.0
                    })
                    .collect();
                assert_eq!(argmax(&v).0, reference(&v), "len {len}");
            }
        }
    }

    #[test]
    fn argmax_first_of_ties_and_special_values() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]).0, 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 20]).0, 0);
        let mut v = vec![0.0; 40];
        v[37] = 5.0; // in the tail after two full lanes of 16
        v[3] = f32::NAN;
        assert_eq!(argmax(&v).0, 37);
        v[20] = f32::INFINITY;
        assert_eq!(argmax(&v).0, 20);
    }
}
