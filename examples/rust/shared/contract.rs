//! What both Rust builds share: the example-client contract (arguments, special tokens, the greedy loop's stop rule)
//! written once. Each crate includes this file with `#[path]` and supplies only the onnxruntime calls.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value};

/// The source ids every example encodes when none are given on the command line.
pub const DEFAULT_SOURCE_IDS: [i64; 6] = [17, 42, 8, 61, 33, 5];
pub const DEFAULT_MAX_NEW_TOKENS: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model_dir: PathBuf,
    pub source_ids: Vec<i64>,
    pub max_new_tokens: usize,
    /// Generate all `max_new_tokens` (as examples/python's --ignore-eos): a random-weight model may pick eos at
    /// step 1, and a test must still reach step 3.
    pub ignore_eos: bool,
}

pub const USAGE: &str = "usage: [--ort 1.16.3|current] [--max-new-tokens N] [--ignore-eos] MODEL_DIR [TOKEN_ID ...]";

/// `[--max-new-tokens N] [--ignore-eos] MODEL_DIR [TOKEN_ID ...]` (`run` has already taken `--ort` off).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Request, String> {
    let mut max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
    let mut ignore_eos = false;
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--ignore-eos" {
            ignore_eos = true;
            continue;
        }
        let value = match arg.strip_prefix("--max-new-tokens") {
            Some("") => args.next(),
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}; {USAGE}")),
            _ => {
                positional.push(arg);
                continue;
            }
        };
        max_new_tokens = value.and_then(|v| v.parse().ok()).ok_or("--max-new-tokens needs a non-negative integer")?;
    }
    let mut positional = positional.into_iter();
    let model_dir = PathBuf::from(positional.next().ok_or(USAGE)?);
    let source_ids = positional
        .map(|id| id.parse::<i64>().map_err(|_| format!("token id {id:?} is not an integer")))
        .collect::<Result<Vec<_>, _>>()?;
    let source_ids = if source_ids.is_empty() { DEFAULT_SOURCE_IDS.to_vec() } else { source_ids };
    Ok(Request { model_dir, source_ids, max_new_tokens, ignore_eos })
}

/// The whole command line of a client: exit 0 with the sequence as the last stdout line, 1 with the runtime's own
/// error on stderr, 2 on bad arguments.
pub fn main_with(decode: impl FnOnce(&Request) -> Result<Vec<i64>, DecodeError>) -> ExitCode {
    let request = match parse_args(std::env::args().skip(1)) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match decode(&request) {
        Ok(sequence) => {
            println!("{}", sequence.iter().map(i64::to_string).collect::<Vec<_>>().join(" "));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The generation settings the loop needs, from config.json overridden by generation_config.json (as transformers
/// reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub decoder_start_token_id: i64,
    pub forced_bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub max_length: Option<usize>,
}

impl Generation {
    pub fn read(model_dir: &Path) -> Result<Self, String> {
        let mut settings = read_json_object(&model_dir.join("config.json"))?;
        let generation_config = model_dir.join("generation_config.json");
        if generation_config.is_file() {
            settings.extend(read_json_object(&generation_config)?);
        }
        let id = |key: &str| settings.get(key).and_then(Value::as_i64);
        let eos_token_ids = match settings.get("eos_token_id") {
            Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_i64).collect(),
            other => other.and_then(Value::as_i64).into_iter().collect(),
        };
        Ok(Generation {
            decoder_start_token_id: id("decoder_start_token_id")
                .ok_or_else(|| format!("no decoder_start_token_id in {}", model_dir.join("config.json").display()))?,
            forced_bos_token_id: id("forced_bos_token_id"),
            eos_token_ids,
            max_length: settings.get("max_length").and_then(Value::as_u64).map(|n| n as usize),
        })
    }
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(format!("{} is not a JSON object", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Where a decode failed; `DecoderStep(3)` is where the unrepaired Optimum export breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Setup,
    Encoder,
    DecoderStep(usize),
}

/// A failure with the runtime's own message, so that the caller can show it as it is.
#[derive(Debug)]
pub struct DecodeError {
    pub stage: Stage,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Stage::Setup => write!(f, "{}", self.message),
            Stage::Encoder => write!(f, "encoder: {}", self.message),
            Stage::DecoderStep(step) => write!(f, "decoder step {step}: {}", self.message),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Tags any error with the stage it happened in.
pub trait At<T> {
    fn at(self, stage: Stage) -> Result<T, DecodeError>;
}

impl<T, E: fmt::Display> At<T> for Result<T, E> {
    fn at(self, stage: Stage) -> Result<T, DecodeError> {
        self.map_err(|e| DecodeError { stage, message: e.to_string() })
    }
}

/// The greedy loop of the contract. `logits_after(sequence, step)` runs the decoder for `step` (1-based) and returns
/// the logits of the last position; the cached client feeds only the last token, a recompute feeds all of them.
pub fn greedy(
    generation: &Generation,
    request: &Request,
    mut logits_after: impl FnMut(&[i64], usize) -> Result<Vec<f32>, DecodeError>,
) -> Result<Vec<i64>, DecodeError> {
    let mut sequence = vec![generation.decoder_start_token_id];
    for step in 1..=request.max_new_tokens {
        if generation.max_length.is_some_and(|max| sequence.len() >= max) {
            break;
        }
        let logits = logits_after(&sequence, step)?;
        let chosen = match generation.forced_bos_token_id {
            // transformers' ForcedBOSTokenLogitsProcessor: the first generated token is the target language's.
            Some(forced) if step == 1 => forced,
            _ => argmax(&logits),
        };
        sequence.push(chosen);
        if !request.ignore_eos && generation.eos_token_ids.contains(&chosen) {
            break;
        }
    }
    Ok(sequence)
}

/// The index of the largest value, the lowest on ties (numpy's argmax).
pub fn argmax(values: &[f32]) -> i64 {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best as i64
}

/// The last position's row of `logits` shaped (1, seq, vocab).
pub fn last_position(logits: &[f32], shape: &[usize]) -> Vec<f32> {
    let vocab = *shape.last().unwrap_or(&0);
    logits[logits.len() - vocab..].to_vec()
}

/// Step 1's past for a `past_key_values.*` input declared (batch, heads, past_len, head_dim): zero past tokens.
/// Optimum declares heads and head_dim as numbers; a symbolic one would leave nothing to build the tensor from.
pub fn empty_past_shape(name: &str, declared: &[Option<i64>]) -> Result<[usize; 4], String> {
    match declared {
        [_, Some(heads), _, Some(head_dim)] => Ok([1, *heads as usize, 0, *head_dim as usize]),
        _ => Err(format!("{name}: heads and head_dim must be fixed numbers in the declared shape, got {declared:?}")),
    }
}

/// `present.X` for the input `past_key_values.X`: the output that becomes this input at the next step.
pub fn present_for(past_name: &str) -> Option<String> {
    past_name.strip_prefix("past_key_values.").map(|suffix| format!("present.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_new_tokens: usize) -> Request {
        Request { model_dir: "m".into(), source_ids: vec![1], max_new_tokens, ignore_eos: false }
    }

    fn generation() -> Generation {
        Generation { decoder_start_token_id: 0, forced_bos_token_id: None, eos_token_ids: vec![2], max_length: None }
    }

    #[test]
    fn argmax_takes_the_lowest_index_on_ties() {
        assert_eq!(argmax(&[0.5, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn greedy_appends_eos_and_stops() {
        let logits = |_: &[i64], step| Ok(if step == 2 { vec![0.0, 0.0, 1.0] } else { vec![0.0, 1.0, 0.0] });
        assert_eq!(greedy(&generation(), &request(10), logits).unwrap(), vec![0, 1, 2]);
        let ignoring_eos = Request { ignore_eos: true, ..request(4) };
        assert_eq!(greedy(&generation(), &ignoring_eos, logits).unwrap(), vec![0, 1, 2, 1, 1]);
    }

    #[test]
    fn greedy_forces_the_first_token_and_honours_max_length() {
        let generation = Generation { forced_bos_token_id: Some(7), max_length: Some(3), ..generation() };
        let sequence = greedy(&generation, &request(10), |_, _| Ok(vec![0.0, 1.0])).unwrap();
        assert_eq!(sequence, vec![0, 7, 1]);
    }

    #[test]
    fn arguments_default_to_the_shared_source_ids() {
        let parsed = parse_args(["--max-new-tokens".into(), "4".into(), "m".into(), "--ignore-eos".into()]).unwrap();
        assert_eq!(parsed, Request { source_ids: DEFAULT_SOURCE_IDS.to_vec(), ignore_eos: true, ..request(4) });
    }
}
