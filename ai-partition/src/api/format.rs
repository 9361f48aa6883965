//! Structured output requests: Ollama's `format` and OpenAI's `response_format`, checked
//! here (400 with the reason) so that only formats the grammar enforces are queued.

use serde_json::Value;

use super::error::ApiError;
use crate::engine::{schema, OutputFormat};

fn schema_format(s: &Value, what: &str) -> Result<OutputFormat, ApiError> {
    schema::check(s).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?;
    Ok(OutputFormat::Schema(s.clone()))
}

/// Ollama's `format`: absent, `""`, `"json"` or a JSON schema object.
pub fn ollama(format: Option<&Value>) -> Result<Option<OutputFormat>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(OutputFormat::JsonObject)),
        Some(s @ Value::Object(_)) => schema_format(s, "format").map(Some),
        Some(other) => Err(ApiError::bad_request(format!(
            "format must be \"json\" or a JSON schema object, not {other}"
        ))),
    }
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`.
pub fn openai(response_format: Option<&Value>) -> Result<Option<OutputFormat>, ApiError> {
    let f = match response_format {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(f)) => f,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
            "response_format must be an object such as {{\"type\": \"json_object\"}}, not {other}"
        ))
            .openai())
        }
    };
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(OutputFormat::JsonObject)),
        Some("json_schema") => {
            let js = f
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ApiError::bad_request(
                    "response_format of type json_schema needs a json_schema object with a schema",
                )
                .openai()
                })?;
            let s = js.get("schema").ok_or_else(|| {
                ApiError::bad_request("response_format.json_schema.schema is required").openai()
            })?;
            schema_format(s, "response_format.json_schema.schema")
                .map(Some)
                .map_err(ApiError::openai)
        }
        other => Err(ApiError::bad_request(format!(
            "response_format.type must be text, json_object or json_schema, not {}",
            other.map_or_else(|| "missing".to_string(), |t| format!("{t:?}"))
        ))
        .openai()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ollama_formats() {
        assert_eq!(ollama(None).unwrap(), None);
        assert_eq!(ollama(Some(&json!(""))).unwrap(), None);
        assert_eq!(
            ollama(Some(&json!("json"))).unwrap(),
            Some(OutputFormat::JsonObject)
        );
        let s = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            ollama(Some(&s)).unwrap(),
            Some(OutputFormat::Schema(s.clone()))
        );
        for bad in [
            json!("yaml"),
            json!(3),
            json!(["json"]),
            json!({"type": "object", "patternProperties": {}}),
        ] {
            let e = ollama(Some(&bad)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn openai_formats() {
        assert_eq!(openai(Some(&json!({"type": "text"}))).unwrap(), None);
        assert_eq!(
            openai(Some(&json!({"type": "json_object"}))).unwrap(),
            Some(OutputFormat::JsonObject)
        );
        let s = json!({"type": "object", "properties": {}});
        assert_eq!(
            openai(Some(&json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}}))).unwrap(),
            Some(OutputFormat::Schema(s))
        );
        for bad in [
            json!("json"),
            json!({"type": "xml"}),
            json!({}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "object", "not": {}}}}),
        ] {
            let e = openai(Some(&bad)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.openai, "{bad}");
        }
    }
}
