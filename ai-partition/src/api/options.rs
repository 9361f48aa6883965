//! Request options (Ollama's `options` object, OpenAI's top-level fields) to
//! `SamplingParams`, with type checks that answer 400 instead of guessing.

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::engine::SamplingParams;
use crate::service::KeepAlive;

fn num(key: &str, v: &Value) -> Result<f64, ApiError> {
    v.as_f64()
        .ok_or_else(|| ApiError::bad_request(format!("option {key} must be a number, not {v}")))
}

fn int(key: &str, v: &Value) -> Result<i64, ApiError> {
    match v.as_i64() {
        Some(i) => Ok(i),
        // Clients sometimes send 64.0 for an integer.
        None => match v.as_f64() {
            Some(f) if f.fract() == 0.0 => Ok(f as i64),
            _ => Err(ApiError::bad_request(format!(
                "option {key} must be an integer, not {v}"
            ))),
        },
    }
}

fn non_negative_u32(key: &str, v: &Value) -> Result<u32, ApiError> {
    let i = int(key, v)?;
    u32::try_from(i).map_err(|_| {
        ApiError::bad_request(format!(
            "option {key} must be between 0 and {}, not {i}",
            u32::MAX
        ))
    })
}

/// `stop` as a string or a list of strings.
pub fn stop_list(v: &Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "stop must be a string or a list of strings, found {i}"
                    ))
                })
            })
            .collect(),
        other => Err(ApiError::bad_request(format!(
            "stop must be a string or a list of strings, not {other}"
        ))),
    }
}

/// `num_predict`: negative means "no limit" (Ollama: -1 infinite, -2 fill the context).
pub fn num_predict(key: &str, v: &Value) -> Result<Option<u32>, ApiError> {
    let i = int(key, v)?;
    Ok(if i < 0 {
        None
    } else {
        Some(u32::try_from(i).unwrap_or(u32::MAX))
    })
}

/// Apply an Ollama `options` object. Unknown keys are ignored like Ollama does
/// (they are mostly runner tuning); known keys with the wrong type are 400.
pub fn apply_ollama(
    p: &mut SamplingParams,
    opts: Option<&Map<String, Value>>,
) -> Result<(), ApiError> {
    let Some(opts) = opts else { return Ok(()) };
    for (k, v) in opts {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "temperature" => p.temperature = num(k, v)? as f32,
            "top_k" => p.top_k = non_negative_u32(k, v)?,
            "top_p" => p.top_p = num(k, v)? as f32,
            "repeat_penalty" => p.repeat_penalty = num(k, v)? as f32,
            "repeat_last_n" => p.repeat_last_n = non_negative_u32(k, v)?,
            "seed" => p.seed = Some(int(k, v)? as u64),
            "num_predict" => p.num_predict = num_predict(k, v)?,
            "stop" => p.stop = stop_list(v)?,
            _ => {}
        }
    }
    if p.temperature < 0.0 || !p.temperature.is_finite() {
        return Err(ApiError::bad_request(
            "temperature must be a finite number >= 0",
        ));
    }
    if !(0.0..=1.0).contains(&p.top_p) {
        return Err(ApiError::bad_request("top_p must be between 0 and 1"));
    }
    Ok(())
}

/// `keep_alive` from a request body field.
pub fn keep_alive(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => KeepAlive::from_json(v)
            .map(Some)
            .map_err(ApiError::bad_request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_map_to_sampling() {
        let mut p = SamplingParams::default();
        let o = json!({"temperature": 0, "top_k": 5, "seed": 42, "num_predict": 8, "stop": ["\n"], "num_ctx": 512});
        apply_ollama(&mut p, o.as_object()).unwrap();
        assert_eq!(p.temperature, 0.0);
        assert_eq!(p.top_k, 5);
        assert_eq!(p.seed, Some(42));
        assert_eq!(p.num_predict, Some(8));
        assert_eq!(p.stop, vec!["\n".to_string()]);
        let o = json!({"num_predict": -1});
        apply_ollama(&mut p, o.as_object()).unwrap();
        assert_eq!(p.num_predict, None);
    }

    #[test]
    fn wrong_types_are_rejected() {
        for bad in [
            json!({"temperature": "hot"}),
            json!({"top_k": -1}),
            json!({"stop": 3}),
            json!({"top_p": 2.0}),
            json!({"seed": 1.5}),
        ] {
            let mut p = SamplingParams::default();
            let e = apply_ollama(&mut p, bad.as_object()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
