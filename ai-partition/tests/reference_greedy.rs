//! Greedy continuations from llama.cpp against the independent numpy llama forward pass
//! (reference/smollm2_reference.py, f32 over dequantised weights).
//!
//! Tolerance: llama.cpp quantises activations for its dot products, so logits differ from
//! the f32 reference by small amounts. Tokens must match exactly until the first step where
//! the reference's top-2 logit margin is below `NEAR_TIE` — there the two implementations
//! may legitimately pick different tokens and everything after differs. At least
//! `MIN_COMPARED` tokens must be compared over all prompts, so the test cannot pass vacuously.

mod reference_support;

use std::ops::ControlFlow;

use nexus_ai::engine::{FinishReason, LoadedModel, SamplingParams};
use reference_support::{fixture, ids, smollm2};

const NEAR_TIE: f64 = 0.25;
const MIN_COMPARED: usize = 24;

#[test]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn greedy_continuations_match_the_numpy_reference() {
    let mut model = smollm2(512);
    let fx = fixture("smollm2_reference.json");
    let mut compared = 0;
    for case in fx["greedy"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let special = case["parse_special"].as_bool().unwrap();
        let prompt_ids = model.tokenize(prompt, false, special).unwrap();
        assert_eq!(
            prompt_ids,
            ids(&case["prompt_ids"]),
            "prompt ids for {prompt:?}"
        );
        let want = ids(&case["generated"]);
        let margins: Vec<f64> = case["top2_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let params = SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.0,
            num_predict: Some(want.len() as u32),
            ..Default::default()
        };
        let mut text = String::new();
        let (reason, stats) = model
            .generate(&prompt_ids, &params, &mut |p| {
                text.push_str(p);
                ControlFlow::Continue(())
            })
            .unwrap();
        let mut got = model.generated_tokens().to_vec();
        // The reference lists the end-of-turn token it stopped at; the engine stops before it.
        if reason == FinishReason::Stop {
            got.push(2);
        }
        assert_eq!(stats.prompt_tokens as usize, prompt_ids.len());
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            if g != w {
                assert!(
                    margins[i] < NEAR_TIE,
                    "{prompt:?}: token {i} is {g}, reference {w} (margin {}, got {got:?}, want {want:?})",
                    margins[i]
                );
                eprintln!(
                    "{prompt:?}: diverged at near-tie step {i} (margin {})",
                    margins[i]
                );
                break;
            }
            compared += 1;
        }
        if got == want {
            let expect_text = case["text"].as_str().unwrap();
            assert_eq!(text, expect_text, "streamed text for {prompt:?}");
        }
    }
    assert!(compared >= MIN_COMPARED, "only {compared} tokens compared");
}
