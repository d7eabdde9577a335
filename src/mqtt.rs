//! The IoT Hub MQTT dialect, shared by the hub's device endpoint ([`crate::hub::mqtt`]) and the
//! MQTT fleet ([`crate::fleet::mqtt`]):
//!
//! - [`topics`]: the topics;
//! - [`frames`]: packet framing with rumqttc's own codec, without I/O;
//! - [`wire`]: framing over an async byte stream (handshakes, one task per connection);
//! - [`stream`]: framing over a non-blocking socket, plain or TLS (event loops serving many
//!   connections per thread).

pub mod frames;
pub mod stream;
pub mod topics;
pub mod wire;
