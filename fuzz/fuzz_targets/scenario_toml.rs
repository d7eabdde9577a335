//! Fuzzes scenario files: reading, validating, planning jobs and building a small registry must
//! not panic (see `fleetsim::fuzzing::scenario`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetsim::fuzzing::scenario(data));
