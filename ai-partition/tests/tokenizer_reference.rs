//! SmolLM2's tokenizer (llama.cpp, from the GGUF metadata) against the independent Python
//! BPE in reference/smollm2_reference.py: identical ids for ASCII, Unicode, code, digits,
//! whitespace and special tokens, and exact round trips.

mod reference_support;

use nexus_ai::engine::LoadedModel;
use reference_support::{fixture, ids, smollm2};

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn token_ids_match_the_reference_and_round_trip() {
    let model = smollm2(256);
    let fx = fixture("smollm2_reference.json");
    let cases = fx["tokenizer"].as_array().expect("tokenizer cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let special = case["parse_special"].as_bool().unwrap();
        let want = ids(&case["ids"]);
        let got = model.tokenize(text, false, special).unwrap();
        assert_eq!(
            got, want,
            "token ids for {text:?} (parse_special={special})"
        );
        let back = model.detokenize(&got, true).unwrap();
        assert_eq!(back, text, "round trip of {text:?}");
    }
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn special_tokens_only_when_asked() {
    let model = smollm2(256);
    // The GGUF's ids for ChatML markers; add_bos_token is false, so nothing is prepended.
    assert_eq!(
        model.tokenize("<|im_start|>", false, true).unwrap(),
        vec![1]
    );
    assert_eq!(model.tokenize("<|im_end|>", true, true).unwrap(), vec![2]);
    let plain = model.tokenize("<|im_start|>", false, false).unwrap();
    assert!(plain.len() > 1 && !plain.contains(&1), "{plain:?}");
    // Rendering specials is optional when decoding.
    assert_eq!(
        model.detokenize(&[1, 4093], true).unwrap(),
        "<|im_start|>user"
    );
    assert_eq!(model.detokenize(&[1, 4093], false).unwrap(), "user");
    assert!(
        model.detokenize(&[49152], false).is_err(),
        "id outside the vocabulary"
    );
}

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn chat_template_renders_like_transformers() {
    let model = smollm2(256);
    let fx = fixture("smollm2_reference.json");
    for case in fx["chat_template"].as_array().unwrap() {
        let messages: Vec<nexus_ai::engine::ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| nexus_ai::engine::ChatMessage {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = model.apply_chat_template(&messages, add).unwrap();
        assert_eq!(got, case["rendered"].as_str().unwrap());
    }
}
