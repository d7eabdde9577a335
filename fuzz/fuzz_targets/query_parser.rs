//! Fuzzes the query parser: no input may panic, whatever parses must print back to the same
//! tree, and evaluating, projecting or planning it must not panic either (see
//! `fleetsim::fuzzing::query`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetsim::fuzzing::query(data));
