//! The seed's test, for either Rust build: the unrepaired Optimum export fails at step 3 with onnxruntime's own
//! error, and the repaired one decodes, to the ids of a no-cache recompute and of examples/python.
//!
//! Everything comes from the environment, and a test fails (never skips) when a variable is missing:
//!   ORT_DYLIB_PATH             the onnxruntime library (`examples/rust/runtime 1.16.3|current` prints its path)
//!   GRAPHFIX_EXAMPLE_REPAIRED  an export folder repaired by graphfix (for 1.16.3: `repair --target-ort 1.16`)
//!   GRAPHFIX_EXAMPLE_ORIGINAL  the unrepaired export; for 1.16.3 one that release loads (opset <= 19, IR <= 9,
//!                              e.g. the legacy exporter's), since a refusal at load is not the seed's failure
//!   GRAPHFIX_EXAMPLE_PYTHON    a Python with numpy and onnxruntime, to run examples/python/greedy_decode.py
//! The including file names the crate `client` and its binary `BINARY`.

use std::path::PathBuf;
use std::process::Command;

use crate::client::contract::{Request, Stage, DEFAULT_SOURCE_IDS};
use crate::client::{decode, Mode};

const MAX_NEW_TOKENS: usize = 32;

fn required(variable: &str, meaning: &str) -> String {
    assert!(std::env::var_os("ORT_DYLIB_PATH").is_some(), "set ORT_DYLIB_PATH: the onnxruntime library to load");
    std::env::var(variable).unwrap_or_else(|_| panic!("set {variable}: {meaning}"))
}

fn request(variable: &str, meaning: &str) -> Request {
    let model_dir = PathBuf::from(required(variable, meaning));
    Request { model_dir, source_ids: DEFAULT_SOURCE_IDS.to_vec(), max_new_tokens: MAX_NEW_TOKENS }
}

fn repaired() -> Request {
    request("GRAPHFIX_EXAMPLE_REPAIRED", "an export folder repaired by graphfix")
}

fn original() -> Request {
    request("GRAPHFIX_EXAMPLE_ORIGINAL", "the unrepaired Optimum export folder")
}

#[test]
fn repaired_export_decodes_past_step_3_like_the_no_cache_recompute() {
    let cached = decode(&repaired(), Mode::Cached).unwrap_or_else(|e| panic!("the repaired export failed: {e}"));
    let recomputed = decode(&repaired(), Mode::Recompute).unwrap();
    // The start token and three generated ones: step 3, where the unrepaired export breaks, has run.
    assert!(cached.len() >= 4, "decoding stopped at {cached:?}, before step 3: this model proves nothing");
    assert_eq!(cached, recomputed);
}

#[test]
fn repaired_export_decodes_to_the_python_reference_ids() {
    let request = repaired();
    let python = required("GRAPHFIX_EXAMPLE_PYTHON", "a Python with numpy and onnxruntime");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/greedy_decode.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&request.model_dir)
        .arg("--ids")
        .args(request.source_ids.iter().map(i64::to_string))
        .args(["--max-new-tokens", &MAX_NEW_TOKENS.to_string(), "--json"])
        .output()
        .expect("GRAPHFIX_EXAMPLE_PYTHON runs");
    assert!(output.status.success(), "{script}: {}", String::from_utf8_lossy(&output.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reference: Vec<i64> = serde_json::from_value(reference["tokens"].clone()).unwrap();
    assert_eq!(decode(&request, Mode::Cached).unwrap(), reference);
}

#[test]
fn unrepaired_export_fails_at_step_3_with_the_runtime_error() {
    let error = decode(&original(), Mode::Cached).expect_err("the unrepaired export must not decode");
    assert_eq!(error.stage, Stage::DecoderStep(3), "{error}");
    // onnxruntime's own words: a node inside the merged decoder's If (its with-past branch) meets the
    // (0, heads, 1, head_dim) encoder KV fed back from step 2. Which node depends on the model: a Reshape (legacy
    // Marian, as in the seed), a MatMul (current Marian), an Add (T5).
    assert!(error.message.contains("Non-zero status code returned while running If node"), "{error}");
}

#[test]
fn command_prints_the_sequence_last_and_fails_on_the_original() {
    let fixed = Command::new(crate::BINARY).arg(repaired().model_dir).output().unwrap();
    let stdout = String::from_utf8(fixed.stdout).unwrap();
    let expected = decode(&repaired(), Mode::Cached).unwrap();
    let printed: Vec<i64> = stdout.lines().last().unwrap_or("").split(' ').map(|id| id.parse().unwrap()).collect();
    assert!(fixed.status.success());
    assert_eq!(printed, expected);

    let broken = Command::new(crate::BINARY).arg(original().model_dir).output().unwrap();
    let stderr = String::from_utf8(broken.stderr).unwrap();
    assert_eq!(broken.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().find(|line| line.starts_with("error: ")).unwrap_or("");
    assert!(error.starts_with("error: decoder step 3: ") && error.contains("Non-zero status code"), "{stderr}");
}
