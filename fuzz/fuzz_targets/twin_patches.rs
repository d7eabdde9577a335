//! Fuzzes twin writes: tags, desired and reported patches and replacements must neither panic
//! nor leave a twin beyond IoT Hub's limits (see `fleetsim::fuzzing::twin_patches`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetsim::fuzzing::twin_patches(data));
