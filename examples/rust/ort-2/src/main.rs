//! `greedy-decode-ort2 [--max-new-tokens N] MODEL_DIR [TOKEN_ID ...]`: prints the decoded ids as the last line.

use std::process::ExitCode;

use greedy_decode_ort2::{contract, decode, Mode};

fn main() -> ExitCode {
    contract::main_with(|request| decode(request, Mode::Cached))
}
