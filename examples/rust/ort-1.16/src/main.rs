//! `greedy-decode-ort116 [--max-new-tokens N] MODEL_DIR [TOKEN_ID ...]`: prints the decoded ids as the last line.

use std::process::ExitCode;

use greedy_decode_ort116::{contract, decode, Mode};

fn main() -> ExitCode {
    let request = match contract::parse_args(std::env::args().skip(1)) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match decode(&request, Mode::Cached) {
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
