//! Greedy decoding of a graphfix-repaired Optimum export with `ort` 2 (a current onnxruntime, loaded dynamically).
//!
//! ort 2 runs with named inputs and returns named outputs, so each present.X value goes back as past_key_values.X
//! without a copy.

#[path = "../../shared/contract.rs"]
pub mod contract;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Outlet, Tensor};

use contract::{At, DecodeError, Generation, Request, Stage};

/// How each step feeds the decoder: the plain KV-cache loop, or the whole prefix without a cache (the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cached,
    Recompute,
}

pub fn decode(request: &Request, mode: Mode) -> Result<Vec<i64>, DecodeError> {
    let generation = Generation::read(&request.model_dir).at(Stage::Setup)?;
    let environment = environment().at(Stage::Setup)?;
    let mut encoder = load(environment, &request.model_dir.join("encoder_model.onnx"))?;
    let mut decoder = load(environment, &request.model_dir.join("decoder_model_merged.onnx"))?;

    let source_len = request.source_ids.len();
    let source_ids = Tensor::from_array(([1, source_len], request.source_ids.clone())).at(Stage::Setup)?;
    let mask = Tensor::from_array(([1, source_len], vec![1_i64; source_len])).at(Stage::Setup)?;
    let hidden = run_encoder(&mut encoder, &source_ids, &mask).at(Stage::Encoder)?;
    let past_names: Vec<String> = decoder
        .inputs()
        .iter()
        .map(Outlet::name)
        .filter(|n| n.starts_with("past_key_values."))
        .map(String::from)
        .collect();

    let mut presents: HashMap<String, DynValue> = HashMap::new();
    contract::greedy(&generation, request, |sequence, step| {
        let at = Stage::DecoderStep(step);
        let use_cache = mode == Mode::Cached && step > 1;
        let fed = if mode == Mode::Cached { &sequence[sequence.len() - 1..] } else { sequence };
        // [docs:named-inputs]
        let mut inputs: Vec<(String, SessionInputValue)> = vec![
            ("input_ids".into(), Tensor::from_array(([1, fed.len()], fed.to_vec())).at(at)?.into()),
            ("encoder_hidden_states".into(), (&hidden).into()),
            ("encoder_attention_mask".into(), (&mask).into()),
            ("use_cache_branch".into(), Tensor::from_array(([1], vec![use_cache])).at(at)?.into()), // rank 1, shape [1]
        ];
        // [/docs:named-inputs]
        for name in &past_names {
            let present = contract::present_for(name).and_then(|present| presents.remove(&present));
            let past = match present {
                Some(present) if use_cache => present,
                _ => empty_past(decoder.inputs(), name).at(at)?,
            };
            inputs.push((name.clone(), past.into()));
        }
        // Feed only the inputs the model declares, as the contract says.
        inputs.retain(|(name, _)| decoder.inputs().iter().any(|input| input.name() == name));

        let mut outputs = decoder.run(inputs).at(at)?;
        let (shape, logits) = outputs
            .get("logits")
            .ok_or("the decoder has no `logits` output")
            .at(at)?
            .try_extract_tensor::<f32>()
            .at(at)?;
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let logits = contract::last_position(logits, &shape);
        let present_names: Vec<String> =
            outputs.keys().filter(|n| n.starts_with("present.")).map(String::from).collect();
        for name in present_names {
            let value = outputs.remove(&name).expect("listed just above");
            presents.insert(name, value);
        }
        Ok(logits)
    })
}

/// ort 2 builds one environment per process (a second `build()` is refused), and a test decodes several models.
fn environment() -> Result<&'static Environment, String> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    let built = ENVIRONMENT.get_or_init(|| ort::init().with_name("greedy-decode").build().map_err(|e| e.to_string()));
    built.as_ref().map_err(String::clone)
}

fn load(environment: &Environment, path: &Path) -> Result<Session, DecodeError> {
    Session::builder(environment)
        .and_then(|mut builder| builder.commit_from_file(path))
        .map_err(|e| DecodeError { stage: Stage::Setup, message: format!("{}: {e}", path.display()) })
}

/// `last_hidden_state` of the encoder, kept as the runtime returned it: every decoder step borrows it.
fn run_encoder(encoder: &mut Session, source_ids: &Tensor<i64>, mask: &Tensor<i64>) -> Result<DynValue, String> {
    let mut inputs: Vec<(String, SessionInputValue)> = Vec::new();
    for input in encoder.inputs() {
        let value = match input.name() {
            "input_ids" => source_ids,
            "attention_mask" => mask,
            name => return Err(format!("unknown encoder input {name}")),
        };
        inputs.push((input.name().to_string(), value.into()));
    }
    let mut outputs = encoder.run(inputs).map_err(|e| e.to_string())?;
    outputs.remove("last_hidden_state").ok_or_else(|| "the encoder has no `last_hidden_state` output".to_string())
}

/// Step 1's past for `name`: a zero-length tensor (1, heads, 0, head_dim) as the decoder declares it.
fn empty_past(inputs: &[Outlet], name: &str) -> Result<DynValue, String> {
    let input = inputs.iter().find(|input| input.name() == name).ok_or("no such input")?;
    let declared: Vec<Option<i64>> = input
        .dtype()
        .tensor_shape()
        .map(|shape| shape.iter().map(|&d| (d >= 0).then_some(d)).collect())
        .unwrap_or_default();
    let shape = contract::empty_past_shape(name, &declared)?;
    let tensor = Tensor::<f32>::from_array((shape, Vec::new())).map_err(|e| e.to_string())?;
    Ok(tensor.into_dyn())
}
