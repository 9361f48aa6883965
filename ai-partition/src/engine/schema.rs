//! The JSON Schema subset structured output accepts, checked before anything is queued so a
//! schema the grammar could not enforce is a clear 400 naming the keyword and where it is,
//! never output that silently ignores part of the schema.
//!
//! Supported: `type` (`object`, `string`, `number`, `integer`, `boolean`, `array`, `null`,
//! or a list of them), `properties`, `required`, `additionalProperties` (absent means
//! `false` when `properties` is given), `items`, `minItems`/`maxItems`, `enum`, `const`,
//! `anyOf` (and `oneOf`, enforced as `anyOf`), `minLength`/`maxLength`, `format` (`date`,
//! `time`, `date-time`, `uuid`), integer `minimum`/`maximum` (and the exclusive forms),
//! local `$ref`s into `$defs`/`definitions`, and annotations (`title`, `description`, ...).

use serde_json::{Map, Value};

/// Keywords that only describe and never constrain.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];
const TYPES: &[&str] = &[
    "object", "string", "number", "integer", "boolean", "array", "null",
];
const FORMATS: &[&str] = &["date", "time", "date-time", "uuid"];
/// Larger counts unroll into grammars too big to be worth building.
const MAX_COUNT: u64 = 1024;
const MAX_DEPTH: usize = 32;
const MAX_NODES: usize = 2000;

/// Check that `schema` uses only the supported subset. The error says what is wrong and
/// where (a JSON pointer into the schema).
pub fn check(schema: &Value) -> Result<(), String> {
    let Value::Object(root) = schema else {
        return Err(format!(
            "a JSON schema must be an object, not {}",
            kind_of(schema)
        ));
    };
    let mut c = Checker { root, nodes: 0 };
    c.node(schema, "", 0)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Checker<'a> {
    root: &'a Map<String, Value>,
    nodes: usize,
}

impl Checker<'_> {
    fn node(&mut self, v: &Value, at: &str, depth: usize) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "the schema is too large (more than {MAX_NODES} subschemas)"
            ));
        }
        if depth > MAX_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_DEPTH} levels at {at}"
            ));
        }
        let s = match v {
            // `true` accepts anything; `false` could never be produced.
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => {
                return Err(format!(
                    "the schema at {} accepts nothing (false)",
                    here(at)
                ))
            }
            Value::Object(s) => s,
            other => {
                return Err(format!(
                    "the schema at {} must be an object, not {}",
                    here(at),
                    kind_of(other)
                ))
            }
        };
        let types = self.types(s, at)?;
        let has = |t: &str| types.is_empty() || types.contains(&t);
        for (k, val) in s {
            let key_at = format!("{at}/{}", escape(k));
            match k.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "type" => {}
                "$defs" | "definitions" => {
                    if !at.is_empty() {
                        return Err(format!("{k} is only supported at the top of the schema, found at {key_at}"));
                    }
                    let defs = val
                        .as_object()
                        .ok_or_else(|| format!("{key_at} must be an object"))?;
                    for (name, d) in defs {
                        self.node(d, &format!("{key_at}/{}", escape(name)), depth + 1)?;
                    }
                }
                "$ref" => self.reference(val, &key_at)?,
                "properties" => {
                    let props = val
                        .as_object()
                        .ok_or_else(|| format!("{key_at} must be an object"))?;
                    for (name, p) in props {
                        self.node(p, &format!("{key_at}/{}", escape(name)), depth + 1)?;
                    }
                }
                "required" => {
                    let names = val
                        .as_array()
                        .ok_or_else(|| format!("{key_at} must be a list of property names"))?;
                    let props = s.get("properties").and_then(Value::as_object);
                    for n in names {
                        let n = n
                            .as_str()
                            .ok_or_else(|| format!("{key_at} must list property names (strings), found {n}"))?;
                        if !props.is_some_and(|p| p.contains_key(n)) {
                            return Err(format!("required property \"{n}\" at {key_at} is not in properties"));
                        }
                    }
                }
                "additionalProperties" => match val {
                    Value::Bool(_) => {}
                    _ => self.node(val, &key_at, depth + 1)?,
                },
                "items" => self.node(val, &key_at, depth + 1)?,
                "minItems" | "maxItems" | "minLength" | "maxLength" => {
                    let n = val.as_u64().ok_or_else(|| {
                        format!("{key_at} must be a non-negative integer, not {val}")
                    })?;
                    if n > MAX_COUNT {
                        return Err(format!("{key_at} is {n}; at most {MAX_COUNT} is supported"));
                    }
                }
                "enum" => {
                    let vals = val
                        .as_array()
                        .ok_or_else(|| format!("{key_at} must be a list of values"))?;
                    if vals.is_empty() {
                        return Err(format!("{key_at} is empty: no value would be allowed"));
                    }
                }
                "const" => {}
                "anyOf" | "oneOf" => {
                    let alts = val
                        .as_array()
                        .ok_or_else(|| format!("{key_at} must be a list of schemas"))?;
                    if alts.is_empty() {
                        return Err(format!("{key_at} is empty: no value would be allowed"));
                    }
                    for (i, a) in alts.iter().enumerate() {
                        self.node(a, &format!("{key_at}/{i}"), depth + 1)?;
                    }
                }
                "format" => {
                    let f = val.as_str().unwrap_or_default();
                    if !FORMATS.contains(&f) {
                        return Err(format!(
                            "unsupported string format {val} at {key_at} (supported: {})",
                            FORMATS.join(", ")
                        ));
                    }
                }
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                    if types != ["integer"] {
                        return Err(format!(
                            "{k} at {key_at} is only supported on \"type\": \"integer\" (the grammar cannot bound other numbers)"
                        ));
                    }
                    if val.as_i64().is_none() {
                        return Err(format!("{key_at} must be an integer, not {val}"));
                    }
                }
                other => {
                    return Err(format!(
                        "unsupported JSON schema keyword \"{other}\" at {}: supported are type, properties, required, additionalProperties, items, minItems, maxItems, enum, const, anyOf, oneOf, minLength, maxLength, format, minimum, maximum, $ref, $defs",
                        here(at)
                    ))
                }
            }
        }
        // Keywords that belong to another type than the one declared would be ignored.
        for (kw, ty) in [
            ("properties", "object"),
            ("additionalProperties", "object"),
            ("required", "object"),
            ("items", "array"),
            ("minItems", "array"),
            ("maxItems", "array"),
            ("minLength", "string"),
            ("maxLength", "string"),
            ("format", "string"),
        ] {
            if s.contains_key(kw) && !has(ty) {
                return Err(format!(
                    "{kw} at {} needs \"type\": \"{ty}\" (the schema says {})",
                    here(at),
                    s["type"]
                ));
            }
        }
        Ok(())
    }

    /// The declared types (empty: none declared).
    fn types<'v>(&self, s: &'v Map<String, Value>, at: &str) -> Result<Vec<&'v str>, String> {
        let one = |t: &'v Value| -> Result<&'v str, String> {
            t.as_str().filter(|t| TYPES.contains(t)).ok_or_else(|| {
                format!(
                    "unknown type {t} at {at}/type (use one of {})",
                    TYPES.join(", ")
                )
            })
        };
        match s.get("type") {
            None => Ok(vec![]),
            Some(Value::Array(list)) if !list.is_empty() => list.iter().map(one).collect(),
            Some(t @ Value::String(_)) => Ok(vec![one(t)?]),
            Some(t) => Err(format!(
                "{at}/type must be a type name or a list of them, not {t}"
            )),
        }
    }

    /// `$ref` must point into this schema's `$defs` or `definitions`.
    fn reference(&self, v: &Value, at: &str) -> Result<(), String> {
        let r = v.as_str().ok_or_else(|| format!("{at} must be a string"))?;
        let target = ["#/$defs/", "#/definitions/"].iter().find_map(|prefix| {
            let name = r.strip_prefix(prefix)?;
            let defs = self.root.get(&prefix[2..prefix.len() - 1])?.as_object()?;
            defs.get(&unescape(name))
        });
        match target {
            Some(_) => Ok(()),
            None => Err(format!(
                "{at}: cannot resolve {r:?} (only references into this schema's $defs or definitions are supported)"
            )),
        }
    }
}

fn here(at: &str) -> &str {
    if at.is_empty() {
        "the top of the schema"
    } else {
        at
    }
}

/// JSON pointer escaping of one key.
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn unescape(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    #[test]
    fn the_supported_subset_passes() {
        for ok in [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150}}, "required": ["name", "age"]}),
            json!({"type": "array", "items": {"enum": ["a", "b", 3]}, "minItems": 1, "maxItems": 3}),
            json!({"anyOf": [{"type": "null"}, {"type": ["string", "number"]}]}),
            json!({"type": "object", "properties": {"c": {"$ref": "#/$defs/Country"}}, "$defs": {"Country": {"type": "object", "title": "Country", "properties": {"capital": {"type": "string", "format": "date"}}}}}),
            json!({"type": "object", "additionalProperties": {"type": "boolean"}}),
            json!({"const": 3, "description": "three"}),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn unsupported_or_wrong_schemas_say_what_and_where() {
        for (bad, says) in [
            (json!("json"), "must be an object"),
            (
                json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^a$"}}}),
                "\"pattern\" at /properties/a",
            ),
            (json!({"not": {"type": "string"}}), "\"not\" at the top"),
            (json!({"type": "strin"}), "unknown type"),
            (
                json!({"type": "object", "properties": {}, "required": ["x"]}),
                "\"x\"",
            ),
            (
                json!({"type": "object", "properties": {"a": 3}}),
                "/properties/a must be an object",
            ),
            (json!({"enum": []}), "empty"),
            (json!({"anyOf": []}), "empty"),
            (json!({"type": "number", "minimum": 1}), "integer"),
            (json!({"type": "string", "format": "email"}), "format"),
            (json!({"type": "array", "maxItems": 100000}), "at most"),
            (json!({"$ref": "#/$defs/Nope"}), "cannot resolve"),
            (
                json!({"$ref": "https://example.com/s.json"}),
                "cannot resolve",
            ),
            (
                json!({"type": "string", "items": {}}),
                "needs \"type\": \"array\"",
            ),
            (
                json!({"type": "object", "properties": {"a": false}}),
                "accepts nothing",
            ),
        ] {
            let e = check(&bad).expect_err(&bad.to_string());
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Hostile nesting is refused, not recursed into without bound.
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(check(&deep).unwrap_err().contains("deeper"));
    }
}
