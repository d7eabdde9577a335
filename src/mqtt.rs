//! The IoT Hub MQTT dialect, shared by the hub's device endpoint ([`crate::hub::mqtt`]) and the
//! MQTT fleet ([`crate::fleet::mqtt`]):
//!
//! - [`topics`]: the topics;
//! - [`frames`]: packet framing with rumqttc's own codec, without I/O;
//! - [`wire`]: framing over an async byte stream (handshakes, one task per connection);
//! - [`stream`]: framing over a non-blocking socket, plain or TLS (event loops serving many
//!   connections per thread);
//! - [`reactor`]: what those event loops (the hub's and the fleet's pumps) share: the poller,
//!   the connections, their output and their deadlines.

pub(crate) mod frames;
pub(crate) mod reactor;
pub(crate) mod stream;
pub(crate) mod topics;
pub(crate) mod wire;
