//! Summaries of model files for listings and `/api/show`: family, size, quantisation,
//! context length, chat template, and the full metadata.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::gguf::GgufFile;

/// What Ollama reports under `details` (plus a few fields `/api/show` needs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelDetails {
    /// `gguf` or `safetensors`.
    pub format: String,
    /// Architecture, e.g. `llama` or `bert`.
    pub family: String,
    pub families: Vec<String>,
    /// Human form, e.g. `134.52M`.
    pub parameter_size: String,
    pub parameter_count: u64,
    /// e.g. `Q4_1`, `F32`.
    pub quantization_level: String,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    /// The Jinja chat template shipped with the model, if any.
    pub chat_template: Option<String>,
}

/// Details and full metadata (`key -> JSON value`; long arrays are `null`).
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// Ollama's human parameter count: `134.52M`, `1.7B`.
pub fn human_params(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.1}B", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.2}K", f / 1e3)
    } else {
        n.to_string()
    }
}

pub fn from_gguf(g: &GgufFile) -> (ModelDetails, Metadata) {
    let family = g.architecture().unwrap_or("unknown").to_string();
    let count = g.parameter_count();
    let details = ModelDetails {
        format: "gguf".into(),
        families: vec![family.clone()],
        family,
        parameter_size: human_params(count),
        parameter_count: count,
        quantization_level: g.quantization(),
        context_length: g.arch_u64("context_length"),
        embedding_length: g.arch_u64("embedding_length"),
        chat_template: g.get_str("tokenizer.chat_template").map(str::to_string),
    };
    let mut meta: Metadata = g
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    meta.insert("general.parameter_count".into(), count.into());
    (details, meta)
}

/// A sentence-transformers directory: `config.json` (Hugging Face) + `model.safetensors`.
pub fn from_safetensors_dir(
    dir: &Path,
    weights: &Path,
) -> Result<(ModelDetails, Metadata), String> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))
        .and_then(|t| {
            serde_json::from_str(&t).map_err(|e| format!("{}: {e}", config_path.display()))
        })?;
    let (count, dtype) = safetensors_summary(weights)?;
    let family = config["model_type"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let details = ModelDetails {
        format: "safetensors".into(),
        families: vec![family.clone()],
        family,
        parameter_size: human_params(count),
        parameter_count: count,
        quantization_level: dtype,
        context_length: config["max_position_embeddings"].as_u64(),
        embedding_length: config["hidden_size"].as_u64(),
        chat_template: None,
    };
    let mut meta = Metadata::new();
    if let Some(obj) = config.as_object() {
        for (k, v) in obj {
            meta.insert(format!("config.{k}"), v.clone());
        }
    }
    meta.insert("general.parameter_count".into(), count.into());
    Ok((details, meta))
}

/// Parameter count and dominant dtype from a safetensors header (8-byte length + JSON),
/// without reading the weights.
fn safetensors_summary(path: &Path) -> Result<(u64, String), String> {
    use std::io::Read;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| err(&e))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(err(&"implausible safetensors header length"));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| err(&e))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| err(&e))?;
    let mut count = 0u64;
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for (name, t) in &header {
        if name == "__metadata__" {
            continue;
        }
        let n: u64 = t["shape"]
            .as_array()
            .map(|s| s.iter().filter_map(|d| d.as_u64()).product())
            .unwrap_or(0);
        count += n;
        *by_dtype
            .entry(t["dtype"].as_str().unwrap_or("unknown").to_string())
            .or_default() += n;
    }
    let dtype = by_dtype
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map_or_else(|| "unknown".into(), |(d, _)| d);
    Ok((count, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_parameter_sizes_match_ollama_style() {
        assert_eq!(human_params(134_515_008), "134.52M");
        assert_eq!(human_params(1_711_376_384), "1.7B");
        assert_eq!(human_params(22_713_216), "22.71M");
        assert_eq!(human_params(999), "999");
    }

    #[test]
    fn reads_a_safetensors_header() {
        let dir = std::env::temp_dir().join(format!("nexus-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = br#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"format":"pt"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header);
        bytes.extend([0u8; 24]);
        std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"model_type":"bert","hidden_size":384,"max_position_embeddings":512}"#,
        )
        .unwrap();
        let (d, meta) = from_safetensors_dir(&dir, &dir.join("model.safetensors")).unwrap();
        assert_eq!(d.family, "bert");
        assert_eq!(d.parameter_count, 6);
        assert_eq!(d.quantization_level, "F32");
        assert_eq!(d.context_length, Some(512));
        assert_eq!(d.embedding_length, Some(384));
        assert_eq!(meta["config.hidden_size"], 384);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
