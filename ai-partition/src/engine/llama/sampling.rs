//! Choosing each sequence's next token: plain argmax for greedy decoding, llama.cpp's sampler
//! chain otherwise, and a llama.cpp grammar on top for structured output.
//!
//! With a grammar, the unconstrained choice is tried first and kept when the grammar allows
//! it (the common case); only when it does not is the grammar applied to the whole
//! vocabulary and the choice made again among the allowed tokens (llama.cpp's own server
//! does the same: checking one token is far cheaper than filtering 49k).

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use crate::engine::{EngineError, OutputFormat, SamplingParams};

/// How one sequence's next token is chosen.
pub(super) struct Picker {
    /// `None`: greedy argmax read in place (llama.cpp's sampler would first copy all 49k
    /// candidates for every token).
    chain: Option<LlamaSampler>,
    grammar: Option<LlamaSampler>,
    /// Reused candidate buffer for the grammar's slow path.
    candidates: Vec<LlamaTokenData>,
}

impl Picker {
    pub(super) fn new(
        model: &LlamaModel,
        p: &SamplingParams,
        prompt: &[u32],
    ) -> Result<Self, EngineError> {
        let n_vocab = model.vocab().n_tokens();
        let penalty = p.repeat_penalty != 1.0 && p.repeat_last_n > 0;
        // top_k = 1 keeps only the best token, so temperature and the draw cannot change it.
        let chain = if (p.temperature <= 0.0 || p.top_k == 1) && !penalty {
            None
        } else {
            let mut sampler = build_sampler(p, n_vocab);
            // The repeat penalty looks back over the prompt too, as llama.cpp's server does.
            let look_back = (p.repeat_last_n as usize).min(prompt.len());
            sampler.accept_many(
                prompt[prompt.len() - look_back..]
                    .iter()
                    .map(|&t| LlamaToken(t as i32)),
            );
            Some(sampler)
        };
        let grammar = match &p.format {
            None => None,
            Some(f) => Some(grammar_sampler(model, f)?),
        };
        Ok(Picker {
            chain,
            grammar,
            candidates: Vec::new(),
        })
    }

    /// The next token from output `idx` of the last decode. End-of-generation tokens are
    /// returned without being accepted (generation stops there).
    pub(super) fn pick(
        &mut self,
        ctx: &LlamaContext,
        idx: i32,
        is_eog: impl Fn(LlamaToken) -> bool,
    ) -> Result<LlamaToken, EngineError> {
        let Some(grammar) = &mut self.grammar else {
            return Ok(match &mut self.chain {
                None => argmax(ctx.get_logits_ith(idx)),
                // Applies the chain and accepts the token (penalty history).
                Some(s) => s.sample(ctx, idx),
            });
        };
        let logits = ctx.get_logits_ith(idx);
        let first = match &mut self.chain {
            None => argmax(logits),
            Some(chain) => {
                let mut all = fill(&mut self.candidates, logits);
                chain.apply(&mut all);
                let t = all.selected_token();
                self.candidates = all.data;
                t.ok_or_else(|| EngineError::Inference("the sampler chose no token".into()))?
            }
        };
        let mut one = LlamaTokenDataArray::new(
            vec![LlamaTokenData::new(first, logits[first.0 as usize], 0.0)],
            false,
        );
        grammar.apply(&mut one);
        let token = if one.data[0].logit().is_finite() {
            first
        } else {
            let mut all = fill(&mut self.candidates, logits);
            grammar.apply(&mut all);
            let t = match &mut self.chain {
                None => {
                    let best = all.data.iter().filter(|c| c.logit().is_finite()).fold(
                        None::<&LlamaTokenData>,
                        |b, c| match b {
                            Some(b) if b.logit() >= c.logit() => Some(b),
                            _ => Some(c),
                        },
                    );
                    best.map(LlamaTokenData::id)
                }
                Some(chain) => {
                    chain.apply(&mut all);
                    all.selected_token().filter(|t| {
                        all.data
                            .iter()
                            .any(|c| c.id() == *t && c.logit().is_finite())
                    })
                }
            };
            self.candidates = all.data;
            t.ok_or_else(|| {
                EngineError::Inference("the output format allows no next token".into())
            })?
        };
        if !is_eog(token) {
            grammar
                .try_accept(token)
                .map_err(|e| EngineError::Inference(format!("output format: {e}")))?;
            if let Some(chain) = &mut self.chain {
                chain.accept(token);
            }
        }
        Ok(token)
    }
}

/// All tokens with their logits, in a reused buffer.
fn fill(buf: &mut Vec<LlamaTokenData>, logits: &[f32]) -> LlamaTokenDataArray {
    let mut data = std::mem::take(buf);
    data.clear();
    data.extend(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
    );
    LlamaTokenDataArray::new(data, false)
}

/// The llama.cpp grammar for an output format: llama.cpp's own JSON-schema converter (the
/// schema was checked against the supported subset before it was queued).
fn grammar_sampler(model: &LlamaModel, f: &OutputFormat) -> Result<LlamaSampler, EngineError> {
    let schema = match f {
        OutputFormat::JsonObject => serde_json::json!({"type": "object"}),
        OutputFormat::Schema(s) => {
            crate::engine::schema::check(s).map_err(EngineError::InvalidRequest)?;
            s.clone()
        }
    };
    let gbnf = llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        EngineError::InvalidRequest(format!(
            "llama.cpp cannot turn this JSON schema into a grammar ({e})"
        ))
    })?;
    LlamaSampler::grammar(model, &gbnf, "root").map_err(|e| {
        EngineError::InvalidRequest(format!("the grammar for this JSON schema is invalid: {e}"))
    })
}

/// Index of the first largest logit (llama.cpp's greedy sampler breaks ties the same way).
/// Two passes: a lane-wise maximum the compiler vectorises, then the first position that
/// holds it (a compare-and-branch over 49k logits is one long dependent chain). NaNs are
/// never picked; all -inf (or NaN) gives 0.
pub(super) fn argmax(logits: &[f32]) -> LlamaToken {
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
