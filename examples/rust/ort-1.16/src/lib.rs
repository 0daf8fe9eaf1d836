//! Greedy decoding of a graphfix-repaired Optimum export with `ort` 1.16.3 (onnxruntime 1.16.x, loaded dynamically).
//!
//! `Session::run` in ort 1.16 is positional: it takes the inputs in `session.inputs` order and returns the outputs
//! in `session.outputs` order. So every input list below is built by walking `session.inputs`, and every output is
//! found by its index in `session.outputs`.

#[path = "../../shared/contract.rs"]
pub mod contract;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ndarray::{Array, ArrayD, CowArray, IxDyn};
use ort::tensor::OrtOwnedTensor;
use ort::{Environment, Session, SessionBuilder, Value};

use contract::{At, DecodeError, Generation, Request, Stage};

/// How each step feeds the decoder: the plain KV-cache loop, or the whole prefix without a cache (the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cached,
    Recompute,
}

pub fn decode(request: &Request, mode: Mode) -> Result<Vec<i64>, DecodeError> {
    let generation = Generation::read(&request.model_dir).at(Stage::Setup)?;
    let environment = Environment::builder().with_name("greedy-decode").build().at(Stage::Setup)?.into_arc();
    let encoder = load(&environment, &request.model_dir.join("encoder_model.onnx"))?;
    let decoder = load(&environment, &request.model_dir.join("decoder_model_merged.onnx"))?;

    let source_ids =
        Array::from_shape_vec((1, request.source_ids.len()), request.source_ids.clone()).unwrap().into_dyn();
    let mask = ArrayD::<i64>::ones(source_ids.raw_dim());
    let hidden = run_encoder(&encoder, &source_ids, &mask).at(Stage::Encoder)?;
    let empty_past = empty_past(&decoder).at(Stage::Setup)?;

    // ort 1.16 hands outputs back as Value<'static>, while an input Value<'v> borrows its array (invariantly over
    // 'v): the two cannot go into one run, so each present is copied into an array that the next step borrows.
    let mut presents: HashMap<String, ArrayD<f32>> = HashMap::new();
    contract::greedy(&generation, request, |sequence, step| {
        let at = Stage::DecoderStep(step);
        let use_cache = mode == Mode::Cached && step > 1;
        let fed = if mode == Mode::Cached { &sequence[sequence.len() - 1..] } else { sequence };
        let input_ids = CowArray::from(Array::from_shape_vec((1, fed.len()), fed.to_vec()).unwrap().into_dyn());
        // [docs:bool]
        let use_cache_branch = CowArray::from(ArrayD::from_elem(IxDyn(&[1]), use_cache)); // rank 1, shape [1]
        // [/docs:bool]
        let (hidden, mask) = (CowArray::from(hidden.view()), CowArray::from(mask.view()));
        let mut past = HashMap::new();
        for (name, empty) in &empty_past {
            let present = contract::present_for(name).and_then(|present| presents.get(&present));
            past.insert(name.as_str(), CowArray::from(present.filter(|_| use_cache).unwrap_or(empty).view()));
        }

        // [docs:positional-run]
        // Positional: run() sends this list under the names of `decoder.inputs`, in that order.
        let mut inputs = Vec::with_capacity(decoder.inputs.len());
        for input in &decoder.inputs {
            let value = match input.name.as_str() {
                "input_ids" => Value::from_array(decoder.allocator(), &input_ids),
                "encoder_hidden_states" => Value::from_array(decoder.allocator(), &hidden),
                "encoder_attention_mask" => Value::from_array(decoder.allocator(), &mask),
                "use_cache_branch" => Value::from_array(decoder.allocator(), &use_cache_branch),
                name => match past.get(name) {
                    Some(array) => Value::from_array(decoder.allocator(), array),
                    None => return Err(DecodeError { stage: at, message: format!("unknown decoder input {name}") }),
                },
            };
            inputs.push(value.at(at)?);
        }
        let outputs = decoder.run(inputs).at(at)?;

        let mut logits = None;
        for (output, value) in decoder.outputs.iter().zip(&outputs) {
            let array = to_array(value).at(at)?;
            if output.name == "logits" {
                logits = Some(contract::last_position(array.as_slice().unwrap(), array.shape()));
            } else if output.name.starts_with("present.") {
                presents.insert(output.name.clone(), array);
            }
        }
        // [/docs:positional-run]
        logits.ok_or_else(|| DecodeError { stage: at, message: "the decoder has no `logits` output".into() })
    })
}

/// A copy of an f32 output. ort 1.16's `try_extract` fails on a zero-element tensor ("GetTensorMutableData pointer
/// should not be null": onnxruntime gives it no data), which is what the unrepaired export's present.*.encoder.* are,
/// (0, heads, 1, head_dim); so the shape is read through the C API and the empty array is built from it.
fn to_array(value: &Value) -> Result<ArrayD<f32>, String> {
    let shape = shape_of(value)?;
    if shape.contains(&0) {
        return Ok(ArrayD::zeros(IxDyn(&shape)));
    }
    let tensor: OrtOwnedTensor<f32, IxDyn> = value.try_extract().map_err(|e| e.to_string())?;
    let array = tensor.view().as_standard_layout().into_owned();
    Ok(array)
}

fn shape_of(value: &Value) -> Result<Vec<usize>, String> {
    let api = ort::ort();
    // SAFETY: `value` is a live tensor; `info` and any error status are released here; `dims` has the length
    // onnxruntime reported.
    unsafe {
        let succeeded = |status: ort::sys::OrtStatusPtr| {
            status.is_null() || {
                api.ReleaseStatus.unwrap()(status);
                false
            }
        };
        let (mut info, mut rank, mut dims) = (std::ptr::null_mut(), 0, Vec::new());
        let mut ok = succeeded(api.GetTensorTypeAndShape.unwrap()(value.ptr(), &mut info))
            && succeeded(api.GetDimensionsCount.unwrap()(info, &mut rank));
        if ok {
            dims.resize(rank, 0_i64);
            ok = succeeded(api.GetDimensions.unwrap()(info, dims.as_mut_ptr(), rank));
        }
        if !info.is_null() {
            api.ReleaseTensorTypeAndShapeInfo.unwrap()(info);
        }
        ok.then(|| dims.into_iter().map(|d| d as usize).collect())
            .ok_or_else(|| "onnxruntime cannot tell an output's shape".into())
    }
}

fn load(environment: &Arc<Environment>, path: &Path) -> Result<Session, DecodeError> {
    SessionBuilder::new(environment)
        .and_then(|builder| builder.with_model_from_file(path))
        .map_err(|e| DecodeError { stage: Stage::Setup, message: format!("{}: {e}", path.display()) })
}

/// `last_hidden_state` of the encoder, copied out so that every decoder step can borrow it.
fn run_encoder(encoder: &Session, source_ids: &ArrayD<i64>, mask: &ArrayD<i64>) -> Result<ArrayD<f32>, String> {
    let (source_ids, mask) = (CowArray::from(source_ids.view()), CowArray::from(mask.view()));
    let mut inputs = Vec::new();
    for input in &encoder.inputs {
        let array = match input.name.as_str() {
            "input_ids" => &source_ids,
            "attention_mask" => &mask,
            name => return Err(format!("unknown encoder input {name}")),
        };
        inputs.push(Value::from_array(encoder.allocator(), array).map_err(|e| e.to_string())?);
    }
    let outputs = encoder.run(inputs).map_err(|e| e.to_string())?;
    let index = encoder.outputs.iter().position(|o| o.name == "last_hidden_state").ok_or("no last_hidden_state")?;
    let hidden: OrtOwnedTensor<f32, IxDyn> = outputs[index].try_extract().map_err(|e| e.to_string())?;
    let owned = hidden.view().to_owned();
    Ok(owned)
}

// [docs:empty-past]
/// Step 1's past: a zero-length tensor for every `past_key_values.*` input (onnxruntime 1.16.3 takes zero-size
/// tensors, and ort 1.16 passes them through).
fn empty_past(decoder: &Session) -> Result<HashMap<String, ArrayD<f32>>, String> {
    let mut past = HashMap::new();
    for input in decoder.inputs.iter().filter(|i| i.name.starts_with("past_key_values.")) {
        let declared: Vec<Option<i64>> = input.dimensions.iter().map(|d| d.map(i64::from)).collect();
        let shape = contract::empty_past_shape(&input.name, &declared)?;
        past.insert(input.name.clone(), ArrayD::zeros(IxDyn(&shape)));
    }
    Ok(past)
}
// [/docs:empty-past]
