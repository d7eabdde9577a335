//! The IoT Hub MQTT dialect, shared by the hub's device endpoint ([`crate::hub::mqtt`]) and the
//! MQTT fleet ([`crate::fleet::mqtt`]): the topics ([`topics`]) and packet framing over any
//! byte stream with rumqttc's own codec ([`wire`]).

pub mod topics;
pub mod wire;
