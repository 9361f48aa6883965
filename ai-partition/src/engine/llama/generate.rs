//! Continuous batching over the slots of one llama.cpp context.
//!
//! Each slot is a llama.cpp sequence with its own KV stream. `start` puts a request in the
//! free slot whose cached tokens share the longest prefix with its prompt (only the rest is
//! evaluated). Every `step` then evaluates the next chunk of each waiting prompt, and
//! decodes one token for every generating sequence in a single `llama_decode`; each
//! sequence samples from its own logits with its own sampler and streams its own text.
//!
//! A prompt chunk gets its own `llama_decode` rather than riding in the generating
//! sequences' batch: with one KV stream per sequence llama.cpp splits such a mixed batch
//! into the same two computations anyway (its ubatches hold an equal number of tokens per
//! sequence), and keeping each prompt's chunks exactly what they are when it runs alone
//! keeps its greedy output identical whether or not others run beside it.
//!
//! The per-token path reuses the batch, piece and text buffers, so it does not allocate once
//! they have grown.

use std::ops::ControlFlow;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::sampling::Picker;
use super::LlamaLoaded;
use crate::engine::stream::{PieceStream, Release};
use crate::engine::{
    ComputeTimings, EngineError, FinishReason, GenerationStats, SamplingParams, SeqEvent,
};

/// One slot: what its KV stream holds, and the generation running in it.
pub(super) struct Sequence {
    /// Tokens whose keys/values are in this slot's KV stream, position = index. Kept after
    /// a generation ends, for the prefix reuse of the next one in this slot.
    cached: Vec<LlamaToken>,
    run: Option<Run>,
    /// When this slot was last given a request (orders the reuse of empty slots).
    pub(super) last_used: u64,
}

enum Phase {
    /// Evaluating the prompt from this index on.
    Prompt(usize),
    /// This sampled token is evaluated by the next decode step.
    Generate(LlamaToken),
    /// An empty prompt: nothing to evaluate, ends at the next step.
    Empty,
}

struct Run {
    prompt: Vec<u32>,
    phase: Phase,
    picker: Picker,
    stream: PieceStream,
    max_new: u64,
    stats: GenerationStats,
    gen_started: Option<Instant>,
    /// No other sequence ran in the context from this one's start to its end, so llama.cpp's
    /// per-context counters are this sequence's own.
    alone: bool,
    generated: Vec<u32>,
    /// Start order: prompts are evaluated first come, first served.
    order: u64,
}

impl Sequence {
    pub(super) fn new(n_ctx: u32) -> Self {
        Sequence {
            cached: Vec::with_capacity(n_ctx as usize),
            run: None,
            last_used: 0,
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.run.is_some()
    }

    pub(super) fn cached_len(&self) -> usize {
        self.cached.len()
    }
}

fn common_prefix(cached: &[LlamaToken], prompt: &[u32]) -> usize {
    cached
        .iter()
        .zip(prompt)
        .take_while(|(c, &p)| c.0 as u32 == p)
        .count()
}

pub(super) fn start(
    m: &mut LlamaLoaded,
    prompt: &[u32],
    params: &SamplingParams,
) -> Result<usize, EngineError> {
    let n_ctx = m.n_ctx as usize;
    if prompt.len() >= n_ctx {
        return Err(EngineError::ContextOverflow {
            tokens: prompt.len(),
            n_ctx: m.n_ctx,
        });
    }
    let (model, ctx) = m.owned.split();
    let n_vocab = model.vocab().n_tokens();
    if let Some(&bad) = prompt.iter().find(|&&t| t as i64 >= i64::from(n_vocab)) {
        return Err(EngineError::Inference(format!(
            "prompt token {bad} is outside the vocabulary of {n_vocab}"
        )));
    }
    // The free slot sharing the longest prefix; among equals the least recently used.
    let slot = m
        .seqs
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_running())
        .max_by_key(|(_, s)| {
            (
                common_prefix(&s.cached, prompt),
                std::cmp::Reverse(s.last_used),
            )
        })
        .map(|(i, _)| i)
        .ok_or_else(|| {
            EngineError::InvalidRequest(format!("all {} slots are busy", m.seqs.len()))
        })?;
    let picker = Picker::new(model, params, prompt)?;

    let others = m.seqs.iter().any(Sequence::is_running);
    if others {
        for r in m.seqs.iter_mut().filter_map(|s| s.run.as_mut()) {
            r.alone = false;
        }
    } else {
        ctx.reset_timings();
    }
    m.clock += 1;
    let seq = &mut m.seqs[slot];
    seq.last_used = m.clock;
    let phase = if prompt.is_empty() {
        Phase::Empty
    } else {
        // Keep the longest cached prefix; at least one token must be evaluated to get logits.
        let mut keep = common_prefix(&seq.cached, prompt);
        if keep == prompt.len() {
            keep -= 1;
        }
        if keep < seq.cached.len() {
            if ctx
                .kv_cache_seq_rm(slot as i32, Some(keep as u32), None)
                .is_err()
            {
                let _ = ctx.kv_cache_seq_rm(slot as i32, None, None);
                keep = 0;
            }
            seq.cached.truncate(keep);
        }
        Phase::Prompt(keep)
    };
    let evaluated = match phase {
        Phase::Prompt(keep) => prompt.len() - keep,
        _ => 0,
    };
    seq.run = Some(Run {
        prompt: prompt.to_vec(),
        phase,
        picker,
        stream: PieceStream::new(&params.stop),
        max_new: params.num_predict.map_or(u64::MAX, u64::from),
        stats: GenerationStats {
            prompt_tokens: prompt.len() as u32,
            prompt_tokens_evaluated: evaluated as u32,
            ..Default::default()
        },
        gen_started: None,
        alone: !others,
        generated: Vec::new(),
        order: m.clock,
    });
    Ok(slot)
}

pub(super) fn cancel(m: &mut LlamaLoaded, slot: usize) -> Option<GenerationStats> {
    let run = m.seqs.get_mut(slot)?.run.take()?;
    let mut stats = run.stats;
    stats.eval_ns = run.gen_started.map_or(0, |t| t.elapsed().as_nanos() as u64);
    Some(stats)
}

/// What every sequence's step needs besides the sequence itself.
struct Shared<'a, 'e> {
    model: &'a LlamaModel,
    ctx: &'a mut LlamaContext<'static>,
    piece: &'a mut Vec<u8>,
    generated: &'a mut Vec<u32>,
    n_ctx: usize,
    events: &'a mut (dyn FnMut(usize, SeqEvent<'_>) -> ControlFlow<()> + 'e),
}

pub(super) fn step(
    m: &mut LlamaLoaded,
    events: &mut dyn FnMut(usize, SeqEvent<'_>) -> ControlFlow<()>,
) {
    let LlamaLoaded {
        owned,
        seqs,
        batch,
        n_batch,
        piece,
        generated,
        n_ctx,
        ..
    } = m;
    let (model, ctx) = owned.split();
    let mut sh = Shared {
        model,
        ctx,
        piece,
        generated,
        n_ctx: *n_ctx as usize,
        events,
    };

    // Empty prompts end at once (Ollama's "load only" convention).
    for (i, seq) in seqs.iter_mut().enumerate() {
        if matches!(seq.run.as_ref().map(|r| &r.phase), Some(Phase::Empty)) {
            finish(&mut sh, i, seq, FinishReason::Stop, false);
        }
    }

    // The next chunk of every waiting prompt, oldest first: new requests join the decoding
    // batch as soon as possible, and one chunk each bounds the pause of the others.
    let mut waiting: Vec<(u64, usize)> = seqs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.run.as_ref()?.phase {
            Phase::Prompt(_) => Some((s.run.as_ref()?.order, i)),
            _ => None,
        })
        .collect();
    waiting.sort_unstable();
    for (_, i) in waiting {
        prompt_chunk(&mut sh, batch, *n_batch as usize, i, &mut seqs[i]);
    }

    // One token for every generating sequence, in one batch.
    batch.clear();
    let mut added = 0;
    for (i, seq) in seqs.iter_mut().enumerate() {
        if let Some(Run {
            phase: Phase::Generate(t),
            ..
        }) = &seq.run
        {
            if let Err(e) = batch.add(*t, seq.cached.len() as i32, &[i as i32], true) {
                fail(&mut sh, i, seq, EngineError::Inference(e.to_string()));
                continue;
            }
            added += 1;
        }
    }
    if added == 0 {
        return;
    }
    let decoded = sh.ctx.decode(batch);
    let mut idx = 0;
    for (i, seq) in seqs.iter_mut().enumerate() {
        let Some(Run {
            phase: Phase::Generate(t),
            ..
        }) = &seq.run
        else {
            continue;
        };
        let t = *t;
        match &decoded {
            Err(e) => {
                // The KV stream may hold part of the failed batch: start this slot clean.
                let _ = sh.ctx.kv_cache_seq_rm(i as i32, None, None);
                seq.cached.clear();
                fail(
                    &mut sh,
                    i,
                    seq,
                    EngineError::Inference(format!("decoding failed: {e}")),
                );
            }
            Ok(()) => {
                seq.cached.push(t);
                sample(&mut sh, i, seq, idx);
                idx += 1;
            }
        }
    }
}

/// Evaluate the next chunk of sequence `i`'s prompt; after the last, sample its first token.
fn prompt_chunk(
    sh: &mut Shared,
    batch: &mut llama_cpp_2::llama_batch::LlamaBatch,
    n_batch: usize,
    i: usize,
    seq: &mut Sequence,
) {
    let Some(run) = seq.run.as_mut() else { return };
    let Phase::Prompt(next) = run.phase else {
        return;
    };
    let end = (next + n_batch).min(run.prompt.len());
    let last = end == run.prompt.len();
    batch.clear();
    let mut add_err = None;
    for (j, &t) in run.prompt[next..end].iter().enumerate() {
        let want_logits = last && next + j + 1 == end;
        let pos = seq.cached.len() as i32;
        if let Err(e) = batch.add(LlamaToken(t as i32), pos, &[i as i32], want_logits) {
            add_err = Some(e);
            break;
        }
        seq.cached.push(LlamaToken(t as i32));
    }
    if let Some(e) = add_err {
        let _ = sh.ctx.kv_cache_seq_rm(i as i32, None, None);
        seq.cached.clear();
        return fail(sh, i, seq, EngineError::Inference(e.to_string()));
    }
    let started = Instant::now();
    if let Err(e) = sh.ctx.decode(batch) {
        // The cache no longer matches `cached`; start clean next time.
        let _ = sh.ctx.kv_cache_seq_rm(i as i32, None, None);
        seq.cached.clear();
        fail(
            sh,
            i,
            seq,
            EngineError::Inference(format!("prompt evaluation failed: {e}")),
        );
        return;
    }
    run.stats.prompt_eval_ns += started.elapsed().as_nanos() as u64;
    run.phase = Phase::Prompt(end);
    if last {
        run.gen_started = Some(Instant::now());
        sample(sh, i, seq, batch.n_tokens() - 1);
    }
}

/// Pick sequence `i`'s next token from output `idx` of the last decode, stream its text and
/// decide whether the sequence goes on.
fn sample(sh: &mut Shared, i: usize, seq: &mut Sequence, idx: i32) {
    let Some(run) = seq.run.as_mut() else { return };
    let model = sh.model;
    let vocab = model.vocab();
    let token = match run.picker.pick(sh.ctx, idx, |t| vocab.is_eog(t)) {
        Ok(t) => t,
        Err(e) => return fail(sh, i, seq, e),
    };
    if vocab.is_eog(token) {
        return finish(sh, i, seq, FinishReason::Stop, true);
    }
    run.stats.generated_tokens += 1;
    run.generated.push(token.0 as u32);
    sh.piece.clear();
    vocab.token_to_piece_into(token, sh.piece, false, None);
    match run.stream.push(sh.piece) {
        Release::Text(text) => {
            if !text.is_empty() && (sh.events)(i, SeqEvent::Piece(text)).is_break() {
                return finish(sh, i, seq, FinishReason::Cancelled, false);
            }
        }
        Release::Stop(text) => {
            if !text.is_empty() {
                let _ = (sh.events)(i, SeqEvent::Piece(text));
            }
            return finish(sh, i, seq, FinishReason::Stop, false);
        }
    }
    if u64::from(run.stats.generated_tokens) >= run.max_new || seq.cached.len() >= sh.n_ctx {
        return finish(sh, i, seq, FinishReason::Length, true);
    }
    run.phase = Phase::Generate(token);
}

/// End sequence `i`: release held text (`tail`), report its outcome, free the slot.
fn finish(sh: &mut Shared, i: usize, seq: &mut Sequence, reason: FinishReason, tail: bool) {
    let Some(mut run) = seq.run.take() else {
        return;
    };
    let mut reason = reason;
    if tail && reason != FinishReason::Cancelled {
        let text = run.stream.finish();
        if !text.is_empty() && (sh.events)(i, SeqEvent::Piece(text)).is_break() {
            reason = FinishReason::Cancelled;
        }
    }
    run.stats.eval_ns = run.gen_started.map_or(0, |t| t.elapsed().as_nanos() as u64);
    if run.alone {
        run.stats.compute = Some(compute_timings(sh.ctx));
    }
    std::mem::swap(sh.generated, &mut run.generated);
    let _ = (sh.events)(i, SeqEvent::Done(Ok((reason, run.stats))));
}

fn fail(sh: &mut Shared, i: usize, seq: &mut Sequence, e: EngineError) {
    seq.run = None;
    let _ = (sh.events)(i, SeqEvent::Done(Err(e)));
}

/// llama.cpp's counters since `reset_timings` (the start of this generation).
fn compute_timings(ctx: &mut LlamaContext) -> ComputeTimings {
    let t = ctx.timings();
    let ns = |ms: f64| (ms * 1e6) as u64;
    ComputeTimings {
        prompt_ns: ns(t.t_p_eval_ms()),
        prompt_tokens: t.n_p_eval().max(0) as u32,
        decode_ns: ns(t.t_eval_ms()),
        decodes: t.n_eval().max(0) as u32,
    }
}
