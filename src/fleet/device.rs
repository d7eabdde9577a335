//! A virtual device: a few bytes of state and the rules that turn an event into what the device
//! does next. No I/O and no task: transports call these and act on the answer.

use crate::clock::Micros;
use crate::fleet::behaviour::{rng_for, CohortModel, LinkModel, MethodOutcome, Salt, Trip};
use rand::Rng;

/// One simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VirtualDevice {
    /// Its cohort (an index into the fleet's models).
    pub(crate) cohort: u16,
    /// Never connects.
    pub(crate) offline: bool,
    /// Connected now.
    pub(crate) connected: bool,
    /// Method requests seen (salts the next draw).
    requests: u32,
    /// Desired patches seen.
    patches: u32,
    /// Disconnects so far.
    churns: u32,
    /// Messages from the hub on its link so far (salts the link's draws; only counted when the
    /// cohort has a link).
    messages: u32,
}

/// What a device does with a desired patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DesiredOutcome {
    /// Report back after this delay.
    Ack(Micros),
    /// Never acknowledge.
    Drop,
}

impl VirtualDevice {
    /// A device of `cohort`; whether it is offline for good is drawn from the seed.
    pub(crate) fn new(cohort: u16, model: &CohortModel, seed: u64, idx: u32) -> Self {
        let offline = model.offline > 0.0
            && rng_for(seed, idx, Salt::Offline, 0).gen::<f64>() < model.offline;
        VirtualDevice {
            cohort,
            offline,
            connected: false,
            requests: 0,
            patches: 0,
            churns: 0,
            messages: 0,
        }
    }

    /// A message from the hub enters the device's `link`: whether and when it arrives, and
    /// whether and when the device's answer to it will reach the hub.
    pub(crate) fn on_link(&mut self, link: &LinkModel, seed: u64, idx: u32) -> Trip {
        let trip = link.trip(seed, idx, self.messages);
        self.messages = self.messages.wrapping_add(1);
        trip
    }

    /// Which connection of the device this is (it changes at every disconnect): a message in
    /// flight on its link reaches the device only on the connection it was sent on.
    pub(crate) fn connection(&self) -> u32 {
        self.churns
    }

    /// A method request arrives; a fault may make the device fail `fail` of them (with the
    /// method's error status) on top of its model.
    pub(crate) fn on_method(
        &mut self,
        model: &CohortModel,
        method: &str,
        seed: u64,
        idx: u32,
        fail: Option<f64>,
    ) -> MethodOutcome {
        let mut rng = rng_for(seed, idx, Salt::Method, self.requests);
        self.requests = self.requests.wrapping_add(1);
        let model = model.method(method);
        match (model.draw(&mut rng), fail) {
            (MethodOutcome::Answer { after, .. }, Some(rate)) if rng.gen::<f64>() < rate => {
                MethodOutcome::Answer {
                    after,
                    status: model.error_status,
                }
            }
            (outcome, _) => outcome,
        }
    }

    /// The connection drops (a fault, the hub closing it): the device's messages in flight on
    /// it are lost. Answers the device's count of drops so far (it salts the backoff's draw).
    pub(crate) fn drop_connection(&mut self) -> u32 {
        self.connected = false;
        self.churns = self.churns.wrapping_add(1);
        self.churns
    }

    /// A desired patch arrives.
    pub(crate) fn on_desired(
        &mut self,
        model: &CohortModel,
        seed: u64,
        idx: u32,
    ) -> DesiredOutcome {
        let mut rng = rng_for(seed, idx, Salt::Desired, self.patches);
        self.patches = self.patches.wrapping_add(1);
        if model.ack_failure > 0.0 && rng.gen::<f64>() < model.ack_failure {
            DesiredOutcome::Drop
        } else {
            DesiredOutcome::Ack(model.ack_latency.sample(&mut rng))
        }
    }

    /// When a connected device next drops, counted from now (None: it does not churn).
    pub(crate) fn next_disconnect(
        &mut self,
        model: &CohortModel,
        seed: u64,
        idx: u32,
    ) -> Option<Micros> {
        use rand_distr::Distribution;
        let gap = model.churn_gap.as_ref()?;
        let mut rng = rng_for(seed, idx, Salt::Churn, self.churns.wrapping_mul(2));
        Some(gap.sample(&mut rng).min(3.6e12) as Micros)
    }

    /// How long the device stays away after a disconnect.
    pub(crate) fn downtime(&mut self, model: &CohortModel, seed: u64, idx: u32) -> Micros {
        let mut rng = rng_for(seed, idx, Salt::Churn, self.churns.wrapping_mul(2) + 1);
        self.churns = self.churns.wrapping_add(1);
        model.downtime.sample(&mut rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::fleet::behaviour::{Latency, MethodModel};

    /// A cohort whose methods answer as `default` does, acknowledging twin patches after
    /// `ack_latency` with `ack_failure` of them never sent, and `offline` never connecting.
    fn cohort(
        default: MethodModel,
        ack_latency: Latency,
        ack_failure: f64,
        offline: f64,
    ) -> CohortModel {
        let methods = HashMap::from([("default".to_owned(), default)]);
        CohortModel::new(methods, ack_latency, ack_failure, offline, None)
    }

    fn immediate() -> MethodModel {
        MethodModel {
            latency: Latency::fixed(0),
            error_rate: 0.0,
            error_status: 500,
            no_response: 0.0,
            ok_status: 200,
        }
    }

    #[test]
    fn offline_share_and_determinism() {
        let m = cohort(immediate(), Latency::fixed(0), 0.0, 0.1);
        let offline = (0..50_000)
            .filter(|&i| VirtualDevice::new(0, &m, 9, i).offline)
            .count();
        assert!((4_500..5_500).contains(&offline), "offline {offline}");
        let a: Vec<_> = (0..1000)
            .map(|i| VirtualDevice::new(0, &m, 9, i).offline)
            .collect();
        let b: Vec<_> = (0..1000)
            .map(|i| VirtualDevice::new(0, &m, 9, i).offline)
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn successive_requests_draw_afresh() {
        let default = MethodModel {
            latency: Latency::uniform(1_000, 100_000),
            ..immediate()
        };
        let m = cohort(default, Latency::fixed(0), 0.0, 0.0);
        let mut d = VirtualDevice::new(0, &m, 1, 0);
        let first = d.on_method(&m, "x", 1, 0, None);
        let second = d.on_method(&m, "x", 1, 0, None);
        assert_ne!(first, second, "the request counter salts each draw");
        let mut again = VirtualDevice::new(0, &m, 1, 0);
        assert_eq!(
            again.on_method(&m, "x", 1, 0, None),
            first,
            "and a replay gives the same draw"
        );
    }

    #[test]
    fn twin_acks_fail_at_the_configured_rate() {
        let m = cohort(immediate(), Latency::fixed(5_000), 0.25, 0.0);
        let drops = (0..20_000)
            .filter(|&i| {
                VirtualDevice::new(0, &m, 3, i).on_desired(&m, 3, i) == DesiredOutcome::Drop
            })
            .count();
        assert!((4_700..5_300).contains(&drops), "drops {drops}");
    }
}
