//! Fuzzes the job request body behind `PUT /jobs/v2/{id}`: no body may panic the parser or the
//! engine's creation and printing of the job (see `fleetsim::fuzzing::job_request`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetsim::fuzzing::job_request(data));
