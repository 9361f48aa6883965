//! Tool calling for every chat model, whatever its template.
//!
//! The request's tools (Ollama and OpenAI send the same `{"type": "function", "function":
//! {name, description, parameters}}` list) are described to the model in a system message,
//! and its output is constrained by a grammar to one JSON object: either
//! `{"tool_calls": [{"name": ..., "arguments": {...}}]}`, with each call's name one of the
//! tools and its arguments valid against that tool's parameter schema, or
//! `{"response": "..."}` for a direct answer. The reply is then shaped as each API shapes
//! tool calls. This works with models whose chat template knows nothing of tools (SmolLM2's
//! does not); a model's own tool-call syntax (Hermes `<tool_call>` tags and the like) is
//! not used.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::engine::{schema, ChatMessage, OutputFormat};

/// One callable function.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: Value,
}

/// Which replies are allowed (OpenAI's `tool_choice`; Ollama always means `Auto`).
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    /// A tool call or a direct answer, as the model decides.
    Auto,
    /// At least one tool call.
    Required,
    /// This tool, called once or more.
    Function(String),
}

/// Tool use for one request.
#[derive(Clone, Debug)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: Choice,
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

/// What the model answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Text(String),
    Calls(Vec<Call>),
}

/// Parse the `tools` list. Errors name the offending entry.
pub fn parse(tools: &[Value]) -> Result<Vec<Tool>, String> {
    let mut out = Vec::with_capacity(tools.len());
    let mut seen = HashSet::new();
    for (i, t) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        let t = t
            .as_object()
            .ok_or_else(|| format!("{at} must be an object like {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"))?;
        match t.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "function" => {}
            Some(other) => return Err(format!("{at}.type must be \"function\", not {other}")),
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{at}.function must be an object with a name"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.function.name must be a string"))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{at}.function.name {name:?} must be 1 to 64 letters, digits, '_' or '-'"
            ));
        }
        if !seen.insert(name.to_string()) {
            return Err(format!("{at}: two tools are named {name:?}"));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "{at}.function.description must be a string, not {other}"
                ))
            }
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => {
                if p.get("type").is_some_and(|t| t != "object") {
                    return Err(format!(
                        "{at}.function.parameters must describe an object (\"type\": \"object\")"
                    ));
                }
                schema::check(p).map_err(|e| format!("{at}.function.parameters: {e}"))?;
                if p.get("$defs").is_some() || p.get("definitions").is_some() {
                    return Err(format!(
                        "{at}.function.parameters: $defs and $ref are not supported in tool parameters"
                    ));
                }
                p.clone()
            }
            Some(other) => {
                return Err(format!(
                    "{at}.function.parameters must be a JSON schema object, not {other}"
                ))
            }
        };
        out.push(Tool {
            name: name.to_string(),
            description,
            parameters,
        });
    }
    Ok(out)
}

/// OpenAI's `tool_choice`: `"auto"`, `"none"` (answered as if no tools were given:
/// `Ok(None)`), `"required"` or `{"type": "function", "function": {"name": ...}}`.
pub fn choice(v: Option<&Value>, tools: &[Tool]) -> Result<Option<Choice>, String> {
    let c = match v {
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => return Ok(None),
            "required" => Choice::Required,
            other => {
                return Err(format!(
                    "tool_choice must be auto, none, required or a function, not {other:?}"
                ))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    "tool_choice must look like {\"type\": \"function\", \"function\": {\"name\": ...}}"
                        .to_string()
                })?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(format!("tool_choice names {name:?}, which is not in tools"));
            }
            Choice::Function(name.to_string())
        }
        Some(other) => {
            return Err(format!(
                "tool_choice must be a string or an object, not {other}"
            ))
        }
    };
    Ok(Some(c))
}

impl ToolUse {
    /// The tools the reply may call.
    fn callable(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            Choice::Function(n) => &t.name == n,
            _ => true,
        })
    }

    /// The system text describing the tools and the reply format.
    pub fn instructions(&self) -> String {
        let list: Vec<Value> = self
            .callable()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let mut s = format!(
            "You can call these tools (the JSON schema of each one's arguments is given):\n{}\n\n",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        s.push_str("Reply with one JSON object and nothing else. To call tools: {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]}.");
        if self.choice == Choice::Auto {
            s.push_str(" To answer without a tool: {\"response\": <your answer>}.");
        } else {
            s.push_str(" You must call a tool.");
        }
        s
    }

    /// Put the instructions into the conversation: appended to its system message, or as
    /// a new first one.
    pub fn apply(&self, messages: &mut Vec<ChatMessage>) {
        let text = self.instructions();
        match messages.first_mut() {
            Some(m) if m.role == "system" => {
                m.content.push_str("\n\n");
                m.content.push_str(&text);
            }
            _ => messages.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: text,
                },
            ),
        }
    }

    /// The grammar's schema for the reply; a direct answer follows `answer` (free text when
    /// `None`).
    pub fn format(&self, answer: Option<&OutputFormat>) -> OutputFormat {
        let calls: Vec<Value> = self
            .callable()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                    "required": ["name", "arguments"],
                })
            })
            .collect();
        let call_branch = json!({
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "minItems": 1, "items": {"anyOf": calls}}},
            "required": ["tool_calls"],
        });
        if self.choice != Choice::Auto {
            return OutputFormat::Schema(call_branch);
        }
        let response = match answer {
            None => json!({"type": "string"}),
            Some(OutputFormat::JsonObject) => json!({"type": "object"}),
            Some(OutputFormat::Schema(s)) => s.clone(),
        };
        OutputFormat::Schema(json!({"anyOf": [
            call_branch,
            {"type": "object", "properties": {"response": response}, "required": ["response"]},
        ]}))
    }
}

/// Read the model's constrained reply. Text that is not the expected JSON (cut short by
/// `num_predict`, say) comes back as it is.
pub fn reply(text: &str) -> Reply {
    let Ok(Value::Object(mut v)) = serde_json::from_str::<Value>(text.trim()) else {
        return Reply::Text(text.to_string());
    };
    if let Some(Value::Array(calls)) = v.get("tool_calls") {
        let calls: Option<Vec<Call>> = calls
            .iter()
            .map(|c| {
                Some(Call {
                    name: c.get("name")?.as_str()?.to_string(),
                    arguments: c.get("arguments").filter(|a| a.is_object())?.clone(),
                })
            })
            .collect();
        if let Some(calls) = calls.filter(|c| !c.is_empty()) {
            return Reply::Calls(calls);
        }
    }
    match v.remove("response") {
        Some(Value::String(s)) => Reply::Text(s),
        // A structured answer (a format was asked for too) is returned as JSON text.
        Some(other) => Reply::Text(other.to_string()),
        None => Reply::Text(text.to_string()),
    }
}

/// An earlier assistant turn's tool calls, as the model itself would have written them.
pub fn calls_as_text(calls: &[Call]) -> String {
    let list: Vec<Value> = calls
        .iter()
        .map(|c| json!({"name": c.name, "arguments": c.arguments}))
        .collect();
    json!({"tool_calls": list}).to_string()
}

/// A tool's result as the model reads it.
pub fn result_as_text(name: Option<&str>, content: &str) -> String {
    match name {
        Some(n) => json!({"tool_response": {"name": n, "content": content}}).to_string(),
        None => content.to_string(),
    }
}

/// Tool calls in a request's message history: `[{"function": {"name", "arguments"}}]`,
/// arguments an object (Ollama) or a JSON string of one (OpenAI).
pub fn history_calls(v: &[Value]) -> Result<Vec<Call>, String> {
    v.iter()
        .enumerate()
        .map(|(i, c)| {
            let f = c
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("tool_calls[{i}] needs a function object"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tool_calls[{i}].function.name must be a string"))?;
            let arguments = match f.get("arguments") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(a @ Value::Object(_)) => a.clone(),
                Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                    Ok(a @ Value::Object(_)) => a,
                    _ => {
                        return Err(format!(
                            "tool_calls[{i}].function.arguments must be a JSON object (or a string holding one)"
                        ))
                    }
                },
                Some(other) => {
                    return Err(format!(
                        "tool_calls[{i}].function.arguments must be an object, not {other}"
                    ))
                }
            };
            Ok(Call {
                name: name.to_string(),
                arguments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    }

    #[test]
    fn tools_parse_in_both_shapes_and_bad_ones_are_named() {
        let t = parse(&[weather(), json!({"function": {"name": "now"}})]).unwrap();
        assert_eq!(t[0].name, "get_weather");
        assert_eq!(t[1].parameters, json!({"type": "object", "properties": {}}));
        for (bad, says) in [
            (json!("get_weather"), "tools[0] must be an object"),
            (
                json!({"type": "retrieval", "function": {"name": "x"}}),
                "must be \"function\"",
            ),
            (json!({"type": "function"}), "tools[0].function"),
            (json!({"function": {"name": 3}}), "name must be a string"),
            (json!({"function": {"name": "has space"}}), "letters"),
            (
                json!({"function": {"name": "f", "parameters": "city"}}),
                "parameters must be a JSON schema object",
            ),
            (
                json!({"function": {"name": "f", "parameters": {"type": "string"}}}),
                "describe an object",
            ),
            (
                json!({"function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}}}),
                "pattern",
            ),
        ] {
            let e = parse(std::slice::from_ref(&bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = parse(&[weather(), weather()]).unwrap_err();
        assert!(e.contains("two tools"), "{e}");
    }

    #[test]
    fn choices() {
        let t = parse(&[weather()]).unwrap();
        assert_eq!(choice(None, &t).unwrap(), Some(Choice::Auto));
        assert_eq!(choice(Some(&json!("none")), &t).unwrap(), None);
        assert_eq!(
            choice(Some(&json!("required")), &t).unwrap(),
            Some(Choice::Required)
        );
        assert_eq!(
            choice(
                Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
                &t
            )
            .unwrap(),
            Some(Choice::Function("get_weather".into()))
        );
        assert!(choice(Some(&json!("sometimes")), &t).is_err());
        assert!(choice(
            Some(&json!({"type": "function", "function": {"name": "other"}})),
            &t
        )
        .is_err());
        assert!(choice(Some(&json!(1)), &t).is_err());
    }

    #[test]
    fn the_reply_schema_passes_the_checker_and_replies_parse() {
        let u = ToolUse {
            tools: parse(&[weather()]).unwrap(),
            choice: Choice::Auto,
        };
        let OutputFormat::Schema(s) = u.format(None) else {
            panic!("a schema")
        };
        schema::check(&s).unwrap();
        assert_eq!(
            reply(r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}"#),
            Reply::Calls(vec![Call {
                name: "get_weather".into(),
                arguments: json!({"city": "Paris"})
            }])
        );
        assert_eq!(reply(r#" {"response": "Hi"} "#), Reply::Text("Hi".into()));
        assert_eq!(
            reply(r#"{"response": {"a": 1}}"#),
            Reply::Text(r#"{"a":1}"#.into())
        );
        assert_eq!(
            reply(r#"{"tool_calls": [{"na"#),
            Reply::Text(r#"{"tool_calls": [{"na"#.into())
        );
        let mut msgs = vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        }];
        u.apply(&mut msgs);
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[0].content.contains("get_weather"));
    }

    #[test]
    fn history_calls_accept_objects_and_json_strings() {
        let c = history_calls(&[
            json!({"function": {"name": "a", "arguments": {"x": 1}}}),
            json!({"id": "call_1", "type": "function", "function": {"name": "b", "arguments": "{\"y\": 2}"}}),
        ])
        .unwrap();
        assert_eq!(c[1].arguments, json!({"y": 2}));
        assert!(
            history_calls(&[json!({"function": {"name": "a", "arguments": "not json"}})]).is_err()
        );
        assert!(history_calls(&[json!({"name": "a"})]).is_err());
        assert_eq!(
            calls_as_text(&c[..1]),
            r#"{"tool_calls":[{"name":"a","arguments":{"x":1}}]}"#
        );
    }
}
