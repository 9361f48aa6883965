//! MiniLM sentence embeddings against the independent numpy reference
//! (reference/minilm_reference.py, float64 over the same safetensors), plus the property
//! embeddings exist for: related sentences are closer than unrelated ones.

mod reference_support;

use nexus_ai::engine::{LoadOptions, LoadedModel};
use reference_support::{fixture, ids, model_path};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // Embeddings are L2-normalised, so the dot product is the cosine.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn load() -> Box<dyn LoadedModel> {
    let path = model_path("all-minilm");
    nexus_ai::engine::embedding_engine()
        .load(&path, &LoadOptions::default())
        .expect("load MiniLM")
}

#[test]
#[cfg_attr(
    not(nexus_model_minilm),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn embeddings_match_the_reference() {
    let mut model = load();
    let fx = fixture("minilm_reference.json");
    let cases = fx["sentences"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let got = model.embed(&texts).unwrap();
    assert_eq!(got.len(), texts.len());
    for (case, emb) in cases.iter().zip(&got) {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            model.tokenize(text, true, true).unwrap(),
            ids(&case["ids"]),
            "ids of {text:?}"
        );
        let want: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(emb.len(), 384);
        let norm: f32 = emb.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        // f32 against the float64 reference: agreement to ~1e-5 per component.
        let max_diff = emb
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            max_diff < 2e-4,
            "{text:?}: max component difference {max_diff}"
        );
        assert!(cosine(emb, &want) > 0.99999, "{text:?}");
    }
}

#[test]
#[cfg_attr(
    not(nexus_model_minilm),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn related_sentences_score_higher_than_unrelated() {
    let mut model = load();
    let s = |t: &str| t.to_string();
    let e = model
        .embed(&[
            s("A man is eating food."),
            s("A man is eating a piece of bread."),
            s("The new movie is awesome."),
            s("How do I bake sourdough bread?"),
            s("Tips for making a sourdough loaf at home"),
            s("The stock market fell sharply today."),
        ])
        .unwrap();
    assert!(cosine(&e[0], &e[1]) > cosine(&e[0], &e[2]) + 0.3);
    assert!(cosine(&e[3], &e[4]) > cosine(&e[3], &e[5]) + 0.3);
    assert!(cosine(&e[0], &e[1]) > 0.6, "{}", cosine(&e[0], &e[1]));
    // The same text twice gives the same vector.
    let again = model.embed(&[s("A man is eating food.")]).unwrap();
    assert_eq!(again[0], e[0]);
}

#[test]
#[cfg_attr(
    not(nexus_model_minilm),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
fn long_inputs_are_truncated_and_generation_is_refused() {
    let mut model = load();
    assert_eq!(model.context_len(), 256);
    let long = "word ".repeat(1000);
    let ids = model.tokenize(&long, true, true).unwrap();
    assert_eq!(ids.len(), 256);
    // (Embedding all 256 positions takes a minute in an unoptimised test build; the
    // truncation is the tokenizer's, checked above.)
    assert!(model.memory().weights > 80_000_000);
    assert!(model
        .generate(&[101], &Default::default(), &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .is_err());
    assert!(model.apply_chat_template(&[], true).is_err());
}
