//! Fuzzes the hub's MQTT device side: bytes a device sends after CONNECT, framed and fed to the
//! session state machine among hub messages (see `fleetsim::fuzzing::mqtt_session`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetsim::fuzzing::mqtt_session(data));
