//! The fleet: virtual devices as plain data ([`device`]), the behaviour models that drive them
//! ([`behaviour`]), and the transports that connect them to the hub: in process ([`inproc`]) and
//! one MQTT connection per device ([`mqtt`]; one pump thread serves the established ones),
//! whose devices sign in with [`credentials`] (keys from a hub's state directory, a
//! [`keyfile`], or a policy). A fleet in its own process reports what its devices received to
//! a fleetsim hub over [`receipts`], the side channel of delivery receipts.

pub(crate) mod behaviour;
pub mod credentials;
pub(crate) mod device;
pub(crate) mod faults;
pub mod inproc;
pub mod keyfile;
pub mod mqtt;
pub(crate) mod receipts;

use behaviour::CohortModel;
use device::VirtualDevice;
use faults::FaultPlan;

use crate::shard::Shard;

/// The devices of a fleet's shard with their cohort's model. Device `i` is registry index
/// `i` (a shard's registry holds only its own devices, in the same order).
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    /// The scenario seed.
    pub seed: u64,
    /// One model per cohort.
    pub(crate) models: Vec<CohortModel>,
    /// The devices, in registry order.
    pub(crate) devices: Vec<VirtualDevice>,
    /// The scenario's device-side faults.
    pub(crate) faults: FaultPlan,
}

impl Fleet {
    /// Builds the fleet of `cohorts` (each a model and its device count, in registry order)
    /// restricted to `shard`, with `seed`. A device draws its randomness from its index in the
    /// shard, so a sharded fleet behaves like the whole one statistically, not device for
    /// device.
    pub(crate) fn new(cohorts: Vec<(CohortModel, u64)>, seed: u64, shard: Shard) -> Fleet {
        let total: u64 = cohorts.iter().map(|(_, count)| count).sum();
        let mut devices = Vec::with_capacity((total / u64::from(shard.count) + 1) as usize);
        let mut global = 0u64;
        for (ci, (model, count)) in cohorts.iter().enumerate() {
            for _ in 0..*count {
                global += 1;
                if !shard.contains(global - 1) {
                    continue;
                }
                let idx = devices.len() as u32;
                devices.push(VirtualDevice::new(ci as u16, model, seed, idx));
            }
        }
        Fleet {
            seed,
            models: cohorts.into_iter().map(|(model, _)| model).collect(),
            devices,
            faults: FaultPlan::default(),
        }
    }

    /// The same fleet playing `faults`.
    pub(crate) fn with_faults(mut self, faults: FaultPlan) -> Fleet {
        self.faults = faults;
        self
    }

    /// Devices that never connect.
    pub(crate) fn offline(&self) -> usize {
        self.devices.iter().filter(|d| d.offline).count()
    }
}
