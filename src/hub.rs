//! The emulated IoT Hub: registry and twins, the job engine (an actor owning all of it), the
//! tier model, IoT Hub's error vocabulary, SAS auth, the state directory and the store that
//! keeps the hub's state across restarts, and the service REST API and the MQTT device endpoint.

pub mod api;
pub mod auth;
pub(crate) mod engine;
pub(crate) mod error;
pub(crate) mod handle;
pub mod jobs;
pub mod mqtt;
pub(crate) mod receipts;
pub mod registry;
pub mod state;
pub(crate) mod store;
pub mod throttle;
pub mod twin;

pub use engine::{Engine, EngineOutput};
pub use error::ErrorCode;
pub(crate) use handle::JobView;
pub use handle::{Hub, HubView, TwinWrite};
