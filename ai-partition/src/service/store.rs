//! The model store (`crate::models::ModelStore`) as the service's `Catalog`.

use super::catalog::{Catalog, CatalogError, ModelDetails, ModelEntry, ModelKind, PullProgress};
use crate::models::{self, ModelStore, StoreError, StoredModel};

fn entry(m: StoredModel) -> ModelEntry {
    let family = m.details.family.clone();
    let license = m
        .metadata
        .get("general.license")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    ModelEntry {
        name: m.name.to_string(),
        path: m.path,
        size: m.size,
        digest: m.digest,
        modified_at: m.modified,
        kind: match m.kind {
            models::ModelKind::Generate => ModelKind::Generate,
            models::ModelKind::Embedding => ModelKind::Embedding,
        },
        details: ModelDetails {
            parent_model: String::new(),
            format: m.details.format.clone(),
            families: if family.is_empty() {
                vec![]
            } else {
                vec![family.clone()]
            },
            family,
            parameter_size: m.details.parameter_size.clone(),
            quantization_level: m.details.quantization_level.clone(),
        },
        context_length: m.details.context_length,
        embedding_length: m.details.embedding_length,
        model_info: m.metadata.into_iter().collect(),
        template: m.details.chat_template.unwrap_or_default(),
        license,
    }
}

fn err(e: StoreError) -> CatalogError {
    match e {
        StoreError::NotFound(n) => CatalogError::NotFound(n),
        e @ (StoreError::NotInCatalogue { .. } | StoreError::Package(_)) => {
            CatalogError::Unavailable(e.to_string())
        }
        // An unparsable name names no model.
        StoreError::InvalidName(e) => CatalogError::NotFound(e.to_string()),
        e => CatalogError::Io(e.to_string()),
    }
}

impl Catalog for ModelStore {
    fn list(&self) -> Result<Vec<ModelEntry>, CatalogError> {
        Ok(ModelStore::list(self)
            .map_err(err)?
            .into_iter()
            .map(entry)
            .collect())
    }

    fn resolve(&self, name: &str) -> Result<ModelEntry, CatalogError> {
        ModelStore::resolve(self, name).map(entry).map_err(err)
    }

    fn delete(&self, name: &str) -> Result<(), CatalogError> {
        ModelStore::delete(self, name).map(|_| ()).map_err(err)
    }

    fn pull(&self, name: &str, progress: &mut dyn FnMut(PullProgress)) -> Result<(), CatalogError> {
        ModelStore::pull(self, name, &mut |p: models::PullProgress| {
            progress(PullProgress {
                status: p.status,
                digest: p.digest,
                total: p.total,
                completed: p.completed,
            })
        })
        .map(|_| ())
        .map_err(err)
    }
}
