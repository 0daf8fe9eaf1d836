//! The seed's test on this build; the cases are shared by both Rust builds (see ../../shared/seed_tests.rs).

use greedy_decode_ort2 as client;

const BINARY: &str = env!("CARGO_BIN_EXE_greedy-decode-ort2");

#[path = "../../shared/seed_tests.rs"]
mod seed_tests;
