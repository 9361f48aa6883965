//! Ollama-style model names: `name[:tag]`, tag `latest` when absent.
//!
//! Names compare case-insensitively (Ollama does too), so they are stored lowercase. A
//! leading `library/` or `registry.ollama.ai/library/` is accepted and dropped: clients
//! copied from Ollama documentation sometimes send fully qualified names.

use std::fmt;

pub const DEFAULT_TAG: &str = "latest";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    pub name: String,
    pub tag: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid model name {input:?}: {reason}")]
pub struct NameError {
    pub input: String,
    pub reason: &'static str,
}

impl ModelName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let err = |reason| NameError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let s = s.strip_prefix("registry.ollama.ai/").unwrap_or(s);
        let s = s.strip_prefix("library/").unwrap_or(s);
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) => (n, t),
            None => (s, DEFAULT_TAG),
        };
        if name.is_empty() {
            return Err(err("empty name"));
        }
        if tag.is_empty() {
            return Err(err("empty tag"));
        }
        if name.len() > 128 || tag.len() > 128 {
            return Err(err("too long"));
        }
        let name_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let tag_ok = tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok || !tag_ok {
            return Err(err("use letters, digits, '.', '_' and '-' (name:tag)"));
        }
        if name.starts_with('.') || tag.starts_with('.') {
            return Err(err("must not start with '.'"));
        }
        Ok(ModelName {
            name: name.to_ascii_lowercase(),
            tag: tag.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        ModelName::parse(s).unwrap().to_string()
    }

    #[test]
    fn parses_ollama_forms() {
        assert_eq!(p("smollm2"), "smollm2:latest");
        assert_eq!(p("smollm2:135m"), "smollm2:135m");
        assert_eq!(p(" SmolLM2:135M "), "smollm2:135m");
        assert_eq!(p("library/smollm2:135m"), "smollm2:135m");
        assert_eq!(
            p("registry.ollama.ai/library/all-minilm"),
            "all-minilm:latest"
        );
        assert_eq!(p("all-minilm:l6-v2"), "all-minilm:l6-v2");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", ":latest", "x:", "../etc:x", "a/b", "a b", "..:x", "x:..", "x:a:b",
        ] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
