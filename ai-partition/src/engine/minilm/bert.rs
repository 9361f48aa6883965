//! BERT encoder forward pass (the architecture of all-MiniLM-L6-v2) over f32 weights from a
//! Hugging Face safetensors file, followed by sentence-transformers' mean pooling and L2
//! normalisation.

use safetensors::SafeTensors;

use super::ops::{gelu, layer_norm, linear, softmax};

/// The `config.json` fields the forward pass needs.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f32 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

pub struct Bert {
    pub config: BertConfig,
    word: Vec<f32>,
    pos: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

struct Weights<'a> {
    st: SafeTensors<'a>,
    /// `""` or `"bert."`, whichever the file uses.
    prefix: &'static str,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .st
            .tensor(&full)
            .map_err(|e| format!("tensor {full}: {e}"))?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(format!(
                "tensor {full} is {:?}, only F32 is supported",
                t.dtype()
            ));
        }
        if t.shape() != shape {
            return Err(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                t.shape()
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
    fn linear(&self, name: &str, n_out: usize, n_in: usize) -> Result<Linear, String> {
        Ok(Linear {
            w: self.get(&format!("{name}.weight"), &[n_out, n_in])?,
            b: self.get(&format!("{name}.bias"), &[n_out])?,
        })
    }
    fn norm(&self, name: &str, n: usize) -> Result<Norm, String> {
        Ok(Norm {
            g: self.get(&format!("{name}.weight"), &[n])?,
            b: self.get(&format!("{name}.bias"), &[n])?,
        })
    }
}

impl Bert {
    pub fn from_safetensors(bytes: &[u8], config: BertConfig) -> Result<Self, String> {
        if config.hidden_act != "gelu" {
            return Err(format!("activation {} is not supported", config.hidden_act));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("safetensors: {e}"))?;
        let prefix = if st.tensor("embeddings.word_embeddings.weight").is_ok() {
            ""
        } else {
            "bert."
        };
        let w = Weights { st, prefix };
        let h = config.hidden_size;
        let word_shape =
            w.st.tensor(&format!("{prefix}embeddings.word_embeddings.weight"))
                .map_err(|e| format!("word embeddings: {e}"))?
                .shape()
                .to_vec();
        let vocab = word_shape.first().copied().unwrap_or(0);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                q: w.linear(&format!("{p}.attention.self.query"), h, h)?,
                k: w.linear(&format!("{p}.attention.self.key"), h, h)?,
                v: w.linear(&format!("{p}.attention.self.value"), h, h)?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: w.linear(
                    &format!("{p}.intermediate.dense"),
                    config.intermediate_size,
                    h,
                )?,
                down: w.linear(&format!("{p}.output.dense"), h, config.intermediate_size)?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Bert {
            word: w.get("embeddings.word_embeddings.weight", &[vocab, h])?,
            pos: w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: w.get("embeddings.token_type_embeddings.weight", &[2, h])?,
            emb_norm: w.norm("embeddings.LayerNorm", h)?,
            layers,
            config,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.word.len() / self.config.hidden_size
    }

    pub fn weight_bytes(&self) -> u64 {
        let mut n =
            self.word.len() + self.pos.len() + self.token_type.len() + 2 * self.emb_norm.g.len();
        for l in &self.layers {
            for lin in [&l.q, &l.k, &l.v, &l.attn_out, &l.up, &l.down] {
                n += lin.w.len() + lin.b.len();
            }
            n += 2 * (l.attn_norm.g.len() + l.out_norm.g.len());
        }
        4 * n as u64
    }

    /// Mean-pooled, L2-normalised embedding of one tokenised sequence (all tokens attended,
    /// token type 0). `ids` must be within the vocabulary and the position table.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, String> {
        let h = self.config.hidden_size;
        let n = ids.len();
        if n == 0 {
            return Err("empty input".into());
        }
        if n > self.config.max_position_embeddings {
            return Err(format!(
                "{n} tokens exceed the model's {} positions",
                self.config.max_position_embeddings
            ));
        }
        let mut x = vec![0f32; n * h];
        for (i, (&id, row)) in ids.iter().zip(x.chunks_exact_mut(h)).enumerate() {
            let id = id as usize;
            if id >= self.vocab_size() {
                return Err(format!("token id {id} outside the vocabulary"));
            }
            let word = &self.word[id * h..(id + 1) * h];
            let pos = &self.pos[i * h..(i + 1) * h];
            for k in 0..h {
                row[k] = word[k] + pos[k] + self.token_type[k];
            }
        }
        layer_norm(
            &mut x,
            &self.emb_norm.g,
            &self.emb_norm.b,
            self.config.layer_norm_eps,
        );

        let mut scratch = Scratch::new(n, h, self.config.intermediate_size);
        for layer in &self.layers {
            self.layer(layer, &mut x, &mut scratch);
        }

        let mut pooled = vec![0f32; h];
        for row in x.chunks_exact(h) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        let norm = pooled
            .iter()
            .map(|v| (v / n as f32).powi(2))
            .sum::<f32>()
            .sqrt();
        // sentence-transformers' Normalize clamps the norm at 1e-12.
        let scale = 1.0 / (n as f32 * norm.max(1e-12));
        pooled.iter_mut().for_each(|v| *v *= scale);
        Ok(pooled)
    }

    fn layer(&self, l: &Layer, x: &mut [f32], s: &mut Scratch) {
        let h = self.config.hidden_size;
        let n = x.len() / h;
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        linear(x, &l.q.w, &l.q.b, h, &mut s.q);
        linear(x, &l.k.w, &l.k.b, h, &mut s.k);
        linear(x, &l.v.w, &l.v.b, h, &mut s.v);
        let scale = 1.0 / (d as f32).sqrt();
        s.ctx.iter_mut().for_each(|v| *v = 0.0);
        for head in 0..heads {
            let off = head * d;
            for i in 0..n {
                let qi = &s.q[i * h + off..i * h + off + d];
                for j in 0..n {
                    let kj = &s.k[j * h + off..j * h + off + d];
                    s.scores[j] = super::ops::dot(qi, kj) * scale;
                }
                softmax(&mut s.scores[..n]);
                let out = &mut s.ctx[i * h + off..i * h + off + d];
                for j in 0..n {
                    let p = s.scores[j];
                    let vj = &s.v[j * h + off..j * h + off + d];
                    for (o, v) in out.iter_mut().zip(vj) {
                        *o += p * v;
                    }
                }
            }
        }
        linear(&s.ctx, &l.attn_out.w, &l.attn_out.b, h, &mut s.tmp);
        for (t, v) in s.tmp.iter_mut().zip(x.iter()) {
            *t += v;
        }
        layer_norm(
            &mut s.tmp,
            &l.attn_norm.g,
            &l.attn_norm.b,
            self.config.layer_norm_eps,
        );
        linear(&s.tmp, &l.up.w, &l.up.b, h, &mut s.inter);
        s.inter.iter_mut().for_each(|v| *v = gelu(*v));
        linear(
            &s.inter,
            &l.down.w,
            &l.down.b,
            self.config.intermediate_size,
            x,
        );
        for (v, t) in x.iter_mut().zip(&s.tmp) {
            *v += t;
        }
        layer_norm(x, &l.out_norm.g, &l.out_norm.b, self.config.layer_norm_eps);
    }
}

/// Per-call activations, allocated once per sequence and reused by every layer.
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, h: usize, inter: usize) -> Self {
        Scratch {
            q: vec![0.0; n * h],
            k: vec![0.0; n * h],
            v: vec![0.0; n * h],
            ctx: vec![0.0; n * h],
            tmp: vec![0.0; n * h],
            inter: vec![0.0; n * inter],
            scores: vec![0.0; n],
        }
    }
}
