//! Alert instances and their state changes, as published on `dwcp.alerts` and sent to
//! Alertmanager: the shape shared by every operator that raises alerts (SLA burn rates now,
//! Prometheus alerting rules with the rule evaluator).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::EventTime;

/// The state of an alert instance, as Prometheus names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Not active.
    Inactive,
    /// Active, waiting for its `for` duration.
    Pending,
    /// Active and firing.
    Firing,
    /// Was firing, no longer active.
    Resolved,
}

impl AlertState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One state change of one alert instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    /// [`fingerprint`] of the labels.
    pub fingerprint: u64,
    /// The new state.
    pub state: AlertState,
    /// Labels, `alertname` and `severity` among them.
    pub labels: BTreeMap<String, String>,
    /// Annotations, templates expanded.
    pub annotations: BTreeMap<String, String>,
    /// The value that changed the state.
    pub value: f64,
    /// When it became active (pending or firing), ns.
    pub active_since: Option<EventTime>,
    /// Event time of the change, ns.
    pub event_time: EventTime,
    /// The rule group.
    pub group: String,
    /// The expression, or a description of the condition.
    pub expr: String,
}

impl AlertTransition {
    /// The `alertname` label.
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Alertmanager's fingerprint of a label set (`model.LabelSet.Fingerprint`): FNV-1a 64 over the
/// label names in sorted order, each name and value followed by the separator byte 0xff.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> u64 {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    h
}

/// A label set from `(name, value)` pairs.
pub fn label_set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_of_the_empty_set_is_the_fnv_offset_and_order_does_not_matter() {
        assert_eq!(fingerprint(&BTreeMap::new()), 14_695_981_039_346_656_037);
        let a: BTreeMap<String, String> = label_set(&[("b", "2"), ("a", "1")]);
        let b: BTreeMap<String, String> = label_set(&[("a", "1"), ("b", "2")]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        // The separator keeps {a="b1"} and {ab="1"} apart.
        let c: BTreeMap<String, String> = [("a".to_string(), "b1".to_string())].into();
        let d: BTreeMap<String, String> = [("ab".to_string(), "1".to_string())].into();
        assert_ne!(fingerprint(&c), fingerprint(&d));
    }
}
