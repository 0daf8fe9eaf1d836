//! The seed's test on this build; the cases are shared by both Rust builds (see ../../shared/seed_tests.rs).

use greedy_decode_ort116 as client;

const BINARY: &str = env!("CARGO_BIN_EXE_greedy-decode-ort116");

#[path = "../../shared/seed_tests.rs"]
mod seed_tests;
