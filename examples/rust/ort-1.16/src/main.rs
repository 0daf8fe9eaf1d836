//! `greedy-decode-ort116 [--max-new-tokens N] MODEL_DIR [TOKEN_ID ...]`: prints the decoded ids as the last line.

use std::process::ExitCode;

use greedy_decode_ort116::{contract, decode, Mode};

fn main() -> ExitCode {
    contract::main_with(|request| decode(request, Mode::Cached))
}
