//! The fleet: virtual devices as plain data ([`device`]), the behaviour models that drive them
//! ([`behaviour`]), and the transports that connect them to the hub: in process ([`inproc`]) and
//! one MQTT connection per device ([`mqtt`]).

pub mod behaviour;
pub mod device;
pub mod inproc;
pub mod mqtt;

use behaviour::CohortModel;
use device::VirtualDevice;

use crate::scenario::Scenario;

/// Every device of a scenario with its cohort's model. Device `i` is registry index `i`.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The scenario seed.
    pub seed: u64,
    /// One model per cohort.
    pub models: Vec<CohortModel>,
    /// The devices, in registry order.
    pub devices: Vec<VirtualDevice>,
}

impl Fleet {
    /// Builds the fleet of a scenario with `seed`.
    pub fn new(scenario: &Scenario, seed: u64) -> Fleet {
        let models: Vec<CohortModel> = scenario.cohorts.iter().map(CohortModel::new).collect();
        let total: u64 = scenario.cohorts.iter().map(|c| c.count).sum();
        let mut devices = Vec::with_capacity(total as usize);
        for (ci, c) in scenario.cohorts.iter().enumerate() {
            for _ in 0..c.count {
                let idx = devices.len() as u32;
                devices.push(VirtualDevice::new(ci as u16, &models[ci], seed, idx));
            }
        }
        Fleet {
            seed,
            models,
            devices,
        }
    }

    /// Devices that never connect.
    pub fn offline(&self) -> usize {
        self.devices.iter().filter(|d| d.offline).count()
    }
}
