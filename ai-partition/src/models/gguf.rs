//! GGUF header reader: metadata key/values and tensor shapes, without loading weights.
//!
//! Format (little-endian): magic `GGUF`, version u32 (2 or 3), tensor count u64, metadata
//! count u64, then metadata entries (string key, u32 type, value) and tensor infos (name,
//! u32 dims, u64 per dim, u32 ggml type, u64 offset). Strings are u64 length + UTF-8 bytes.
//! Every length read from the file is bounded before allocation, so a corrupt or hostile
//! file gives an error, never a huge allocation or a panic.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// A metadata value. Long arrays (the vocabulary, merges) are kept only as their length.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    UInt(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    /// Arrays up to [`MAX_KEPT_ARRAY`] elements.
    Array(Vec<GgufValue>),
    /// A longer array: element type name and length only.
    LongArray {
        elem_type: &'static str,
        len: u64,
    },
}

/// Arrays longer than this are summarised (a 49152-token vocabulary is not useful in /api/show).
pub const MAX_KEPT_ARRAY: u64 = 64;
const MAX_STRING: u64 = 16 << 20;
const MAX_COUNT: u64 = 1 << 24;
const MAX_DIMS: u32 = 8;

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::UInt(v) => Some(v),
            GgufValue::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    /// JSON form for APIs (long arrays become `null`, as Ollama's non-verbose show does).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            GgufValue::UInt(v) => Value::from(*v),
            GgufValue::Int(v) => Value::from(*v),
            GgufValue::Float(v) => {
                serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number)
            }
            GgufValue::Bool(v) => Value::Bool(*v),
            GgufValue::String(s) => Value::String(s.clone()),
            GgufValue::Array(a) => Value::Array(a.iter().map(GgufValue::to_json).collect()),
            GgufValue::LongArray { .. } => Value::Null,
        }
    }
}

/// One tensor's name, shape and ggml type id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<TensorInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0}")]
    Version(u32),
    #[error("corrupt GGUF: {0}")]
    Corrupt(String),
    #[error("reading GGUF: {0}")]
    Io(#[from] io::Error),
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let f = std::fs::File::open(path)?;
        Self::read(BufReader::with_capacity(1 << 16, f))
    }

    pub fn read(r: impl Read) -> Result<Self, GgufError> {
        let mut r = Reader(r);
        let mut magic = [0u8; 4];
        r.0.read_exact(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let n_tensors = r.count()?;
        let n_kv = r.count()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(4096) as usize);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::Corrupt(format!(
                    "tensor {name} has {n_dims} dims"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64())
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = r.u32()?;
            let _offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
            });
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// An architecture-scoped key, e.g. `llama.context_length`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.{suffix}"))
    }

    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::elements).sum()
    }

    /// Quantisation name from `general.file_type` (llama.cpp's `llama_ftype`), else from the
    /// most common tensor type.
    pub fn quantization(&self) -> String {
        if let Some(ft) = self.get_u64("general.file_type") {
            if let Some(name) = file_type_name(ft) {
                return name.to_string();
            }
        }
        let mut counts = BTreeMap::new();
        for t in &self.tensors {
            *counts.entry(t.ggml_type).or_insert(0u64) += t.elements();
        }
        counts.into_iter().max_by_key(|&(_, n)| n).map_or_else(
            || "unknown".into(),
            |(ty, _)| ggml_type_name(ty).to_string(),
        )
    }
}

/// llama.cpp's `llama_ftype` names (the ones GGUF files in the wild use).
pub fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// ggml tensor type names.
pub fn ggml_type_name(ty: u32) -> &'static str {
    match ty {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        30 => "BF16",
        _ => "unknown",
    }
}

fn type_name(ty: u32) -> &'static str {
    match ty {
        0 => "uint8",
        1 => "int8",
        2 => "uint16",
        3 => "int16",
        4 => "uint32",
        5 => "int32",
        6 => "float32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "uint64",
        11 => "int64",
        12 => "float64",
        _ => "unknown",
    }
}

struct Reader<R>(R);

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b)?;
        Ok(b)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn count(&mut self) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(GgufError::Corrupt(format!("count {n} is implausible")));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(GgufError::Corrupt(format!("string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.0.read_exact(&mut buf)?;
        // Vocabulary pieces can hold invalid UTF-8 in some files; keep them readable.
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        let copied = io::copy(&mut (&mut self.0).take(n), &mut io::sink())?;
        if copied != n {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }

    /// Skip one array element of type `ty` (arrays of arrays are refused by the caller).
    fn skip_value(&mut self, ty: u32) -> Result<(), GgufError> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let len = self.u64()?;
                if len > MAX_STRING {
                    return Err(GgufError::Corrupt(format!("string of {len} bytes")));
                }
                self.skip(len)
            }
            other => Err(GgufError::Corrupt(format!(
                "unknown array element type {other}"
            ))),
        }
    }

    fn value(&mut self, ty: u32) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            0 => GgufValue::UInt(u64::from(self.bytes::<1>()?[0])),
            1 => GgufValue::Int(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => GgufValue::UInt(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => GgufValue::Int(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => GgufValue::UInt(u64::from(self.u32()?)),
            5 => GgufValue::Int(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => GgufValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                let elem = self.u32()?;
                if elem == 9 {
                    return Err(GgufError::Corrupt("nested arrays".into()));
                }
                let len = self.count()?;
                if len > MAX_KEPT_ARRAY {
                    // Skip without building values: listing models must not allocate
                    // 100k vocabulary strings per GGUF.
                    for _ in 0..len {
                        self.skip_value(elem)?;
                    }
                    GgufValue::LongArray {
                        elem_type: type_name(elem),
                        len,
                    }
                } else {
                    let kept = (0..len)
                        .map(|_| self.value(elem))
                        .collect::<Result<Vec<_>, _>>()?;
                    GgufValue::Array(kept)
                }
            }
            10 => GgufValue::UInt(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(GgufError::Corrupt(format!("unknown value type {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a small GGUF header in memory.
    #[derive(Default)]
    struct Builder {
        kv: Vec<u8>,
        n_kv: u64,
        tensors: Vec<u8>,
        n_tensors: u64,
    }

    fn push_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    impl Builder {
        fn kv_str(mut self, k: &str, v: &str) -> Self {
            push_str(&mut self.kv, k);
            self.kv.extend(8u32.to_le_bytes());
            push_str(&mut self.kv, v);
            self.n_kv += 1;
            self
        }
        fn kv_u32(mut self, k: &str, v: u32) -> Self {
            push_str(&mut self.kv, k);
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        fn kv_str_array(mut self, k: &str, items: &[&str]) -> Self {
            push_str(&mut self.kv, k);
            self.kv.extend(9u32.to_le_bytes());
            self.kv.extend(8u32.to_le_bytes());
            self.kv.extend((items.len() as u64).to_le_bytes());
            for s in items {
                push_str(&mut self.kv, s);
            }
            self.n_kv += 1;
            self
        }
        fn tensor(mut self, name: &str, dims: &[u64], ty: u32) -> Self {
            push_str(&mut self.tensors, name);
            self.tensors.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.tensors.extend(d.to_le_bytes());
            }
            self.tensors.extend(ty.to_le_bytes());
            self.tensors.extend(0u64.to_le_bytes());
            self.n_tensors += 1;
            self
        }
        fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(self.kv);
            out.extend(self.tensors);
            out
        }
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let long: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let bytes = Builder::default()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.context_length", 8192)
            .kv_u32("general.file_type", 3)
            .kv_str_array("short", &["a", "b"])
            .kv_str_array("tokenizer.ggml.tokens", &long)
            .tensor("token_embd.weight", &[576, 49152], 3)
            .tensor("output_norm.weight", &[576], 0)
            .build();
        let g = GgufFile::read(&bytes[..]).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(8192));
        assert_eq!(g.quantization(), "Q4_1");
        assert_eq!(g.parameter_count(), 576 * 49152 + 576);
        assert_eq!(
            g.get("short"),
            Some(&GgufValue::Array(vec![
                GgufValue::String("a".into()),
                GgufValue::String("b".into())
            ]))
        );
        assert_eq!(
            g.get("tokenizer.ggml.tokens"),
            Some(&GgufValue::LongArray {
                elem_type: "string",
                len: 100
            })
        );
        assert_eq!(
            g.get("tokenizer.ggml.tokens").unwrap().to_json(),
            serde_json::Value::Null
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(
            GgufFile::read(&b"PK\x03\x04rest"[..]),
            Err(GgufError::BadMagic(_))
        ));
        let mut v = b"GGUF".to_vec();
        v.extend(9u32.to_le_bytes());
        assert!(matches!(GgufFile::read(&v[..]), Err(GgufError::Version(9))));
        // A huge string length must not allocate.
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.extend(u64::MAX.to_le_bytes());
        assert!(matches!(GgufFile::read(&v[..]), Err(GgufError::Corrupt(_))));
        // Truncated input is an I/O error.
        let full = Builder::default()
            .kv_str("general.architecture", "llama")
            .build();
        assert!(matches!(
            GgufFile::read(&full[..full.len() - 2]),
            Err(GgufError::Io(_))
        ));
    }
}
