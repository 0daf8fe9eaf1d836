//! The seed's test, for either Rust build: the unrepaired Optimum export fails at step 3 with onnxruntime's own
//! error, and the repaired one decodes, to the ids of a no-cache recompute and of examples/python.
//!
//! Everything comes from the environment, and a test fails (never skips) when a variable is missing:
//!   ORT_DYLIB_PATH             the onnxruntime library (`examples/rust/runtime 1.16.3|current` prints its path)
//!   GRAPHFIX_EXAMPLE_REPAIRED  export folders repaired by graphfix, separated by ':' (for 1.16.3:
//!                              `graphfix repair --target-ort 1.16`)
//!   GRAPHFIX_EXAMPLE_ORIGINAL  the unrepaired exports, separated by ':'; at least one must be one this release loads
//!                              (for 1.16.3 the legacy exporter's: opset 14, IR <= 9)
//!   GRAPHFIX_EXAMPLE_PYTHON    a Python with numpy and onnxruntime, to run examples/python/greedy_decode.py
//! Relative paths are taken from the repository root. The including file names the crate `client` and its binary
//! `BINARY`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::client::contract::{DecodeError, Request, Stage, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SOURCE_IDS};
use crate::client::{decode, Mode};

fn setting(variable: &str, meaning: &str) -> String {
    assert!(std::env::var_os("ORT_DYLIB_PATH").is_some(), "set ORT_DYLIB_PATH: the onnxruntime library to load");
    std::env::var(variable).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| panic!("set {variable}: {meaning}"))
}

fn folders(variable: &str, meaning: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let folders: Vec<PathBuf> =
        setting(variable, meaning).split(':').filter(|f| !f.is_empty()).map(|f| root.join(f)).collect();
    for folder in &folders {
        assert!(folder.is_dir(), "{variable} names {}, which is not a folder", folder.display());
    }
    folders
}

fn repaired() -> Vec<PathBuf> {
    folders("GRAPHFIX_EXAMPLE_REPAIRED", "export folders repaired by graphfix, separated by ':'")
}

fn originals() -> Vec<PathBuf> {
    folders("GRAPHFIX_EXAMPLE_ORIGINAL", "the unrepaired Optimum export folders, separated by ':'")
}

fn request(model_dir: &Path, max_new_tokens: usize, ignore_eos: bool) -> Request {
    Request { model_dir: model_dir.to_path_buf(), source_ids: DEFAULT_SOURCE_IDS.to_vec(), max_new_tokens, ignore_eos }
}

#[test]
fn repaired_export_decodes_past_step_3_like_the_no_cache_recompute() {
    for folder in repaired() {
        // Past eos, so that the cached loop runs well beyond step 3, where the unrepaired export fails.
        let request = request(&folder, 12, true);
        let cached = decode(&request, Mode::Cached).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
        assert_eq!(cached.len(), 13, "{}", folder.display());
        assert_eq!(cached, decode(&request, Mode::Recompute).unwrap(), "{}", folder.display());
    }
}

#[test]
fn repaired_export_decodes_to_the_python_reference_ids() {
    let python = setting("GRAPHFIX_EXAMPLE_PYTHON", "a Python with numpy and onnxruntime");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/greedy_decode.py");
    for folder in repaired() {
        let output = Command::new(&python)
            .arg(script)
            .arg(&folder)
            .arg("--ids")
            .args(DEFAULT_SOURCE_IDS.iter().map(i64::to_string))
            .args(["--max-new-tokens", &DEFAULT_MAX_NEW_TOKENS.to_string(), "--json"])
            .output()
            .expect("GRAPHFIX_EXAMPLE_PYTHON runs");
        assert!(output.status.success(), "{script}: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout).unwrap();
        let reference: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
        let reference: Vec<i64> = serde_json::from_value(reference["tokens"].clone()).unwrap();
        let request = request(&folder, DEFAULT_MAX_NEW_TOKENS, false);
        assert_eq!(decode(&request, Mode::Cached).unwrap(), reference, "{}", folder.display());
    }
}

/// generation_config.json's forced_bos_token_id and max_length steer the loop (mBART-50, M2M100, NLLB set them).
#[test]
fn forced_bos_and_max_length_from_generation_config_steer_the_loop() {
    for folder in repaired() {
        let free = decode(&request(&folder, 4, true), Mode::Cached).unwrap();
        let forced = if free[1] == 0 { 1 } else { free[1] - 1 };
        let steered = std::env::temp_dir().join(format!("graphfix-rust-steered-{}", std::process::id()));
        std::fs::create_dir_all(&steered).unwrap();
        for file in ["encoder_model.onnx", "decoder_model_merged.onnx", "config.json"] {
            let _ = std::fs::remove_file(steered.join(file));
            std::os::unix::fs::symlink(folder.canonicalize().unwrap().join(file), steered.join(file)).unwrap();
        }
        let settings = format!(r#"{{"forced_bos_token_id": {forced}, "max_length": 4, "eos_token_id": []}}"#);
        std::fs::write(steered.join("generation_config.json"), settings).unwrap();
        let sequence = decode(&request(&steered, 32, false), Mode::Cached);
        std::fs::remove_dir_all(&steered).unwrap();
        let sequence = sequence.unwrap();
        assert_eq!(sequence.len(), 4, "max_length counts the start token: {sequence:?}");
        assert_eq!(sequence[..2], [free[0], forced]);
    }
}

/// onnxruntime's own words: a node inside the merged decoder's If (its with-past branch) meets the
/// (0, heads, 1, head_dim) encoder KV fed back from step 2. Which node depends on the model: a Reshape (legacy
/// Marian, as in the seed), a MatMul (current Marian), an Add (T5).
fn fails_at_step_3(error: &DecodeError) -> bool {
    error.stage == Stage::DecoderStep(3)
        && error.message.contains("Non-zero status code returned while running If node")
}

/// 1.16.3 refuses the current exporter's IR 10 / opset 21 at load: that counts as failing, not as the seed's test.
fn refused_at_load(error: &DecodeError) -> bool {
    error.stage == Stage::Setup && (error.message.contains("IR version") || error.message.contains("opset"))
}

#[test]
fn unrepaired_export_fails_at_step_3_with_the_runtime_error() {
    let mut failed_at_step_3 = 0;
    for folder in originals() {
        // Past eos: a random-weight model may choose eos before step 3.
        let error =
            decode(&request(&folder, 12, true), Mode::Cached).expect_err("the unrepaired export must not decode");
        assert!(fails_at_step_3(&error) || refused_at_load(&error), "{}: {error}", folder.display());
        failed_at_step_3 += usize::from(fails_at_step_3(&error));
    }
    assert!(failed_at_step_3 > 0, "every original was refused at load: give one this onnxruntime loads");
}

#[test]
fn command_prints_the_sequence_last_and_fails_on_the_original() {
    let folder = &repaired()[0];
    let fixed = Command::new(crate::BINARY).arg(folder).output().unwrap();
    let stdout = String::from_utf8(fixed.stdout).unwrap();
    let printed: Vec<i64> = stdout.lines().last().unwrap_or("").split(' ').map(|id| id.parse().unwrap()).collect();
    assert!(fixed.status.success());
    assert_eq!(printed, decode(&request(folder, DEFAULT_MAX_NEW_TOKENS, false), Mode::Cached).unwrap());

    for original in originals() {
        let broken =
            Command::new(crate::BINARY).arg(&original).args(["--ignore-eos", "--max-new-tokens", "12"]).output();
        let broken = broken.unwrap();
        let stderr = String::from_utf8(broken.stderr).unwrap();
        assert_eq!(broken.status.code(), Some(1), "{stderr}");
        assert!(stderr.lines().any(|line| line.starts_with("error: ")), "{stderr}");
    }
}
