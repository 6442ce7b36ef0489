//! The anomaly operator: a [`SeriesDetector`] per series matching the configured selectors,
//! fed the Prometheus samples the pipeline produces; the score as `dwcp_anomaly_score` and each
//! finished episode as an [`AnomalyRecord`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AnomalyConfig, Episode, SeriesDetector};
use crate::prom::{labels_of, FastMap, Sample};
use crate::selector::Selector;

/// Configuration: which series, and the detectors' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyOperatorConfig {
    /// Series selectors (Prometheus notation); empty: anomaly detection is off.
    pub series: Vec<String>,
    /// Detector settings.
    pub detectors: AnomalyConfig,
    /// Series tracked at most; samples of further series are counted and skipped.
    pub max_series: usize,
}

impl Default for AnomalyOperatorConfig {
    fn default() -> Self {
        AnomalyOperatorConfig {
            series: Vec::new(),
            detectors: AnomalyConfig::default(),
            max_series: 100_000,
        }
    }
}

/// A finished (or, at shutdown, open) episode of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyRecord {
    /// The series' labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// The episode.
    pub episode: Episode,
    /// Whether it has ended.
    pub closed: bool,
}

impl AnomalyRecord {
    /// `name{label="value",...}`.
    pub fn series(&self) -> String {
        let name = self.labels.get("__name__").cloned().unwrap_or_default();
        let rest: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{name}{{{}}}", rest.join(","))
    }
}

/// One tracked series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracked {
    labels: BTreeMap<String, String>,
    last_ms: i64,
    detector: SeriesDetector,
}

/// The operator.
#[derive(Debug)]
pub struct AnomalyOperator {
    selectors: Vec<Selector>,
    config: AnomalyOperatorConfig,
    series: FastMap<u64, Tracked>,
    /// Samples of series past `max_series`, skipped.
    pub dropped: u64,
    /// Samples older than their series' newest, skipped.
    pub out_of_order: u64,
}

impl AnomalyOperator {
    /// Builds the operator.
    ///
    /// # Errors
    /// `series[i]: <why>` for a selector that does not parse.
    pub fn new(config: AnomalyOperatorConfig) -> Result<Self, String> {
        let selectors = config
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| Selector::parse(s).map_err(|e| format!("series[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(AnomalyOperator {
            selectors,
            config,
            series: FastMap::default(),
            dropped: 0,
            out_of_order: 0,
        })
    }

    /// Series tracked.
    pub fn tracked(&self) -> usize {
        self.series.len()
    }

    /// Scores the matching samples: the scores as samples (after learning), finished episodes.
    pub fn process(&mut self, samples: &[Sample], scores: &mut Vec<Sample>, episodes: &mut Vec<AnomalyRecord>) {
        for s in samples {
            if !s.value.is_finite() || s.name().starts_with("dwcp_anomaly") {
                continue;
            }
            if !self.selectors.iter().any(|sel| sel.matches(s)) {
                continue;
            }
            let h = s.series_hash();
            if !self.series.contains_key(&h) {
                if self.series.len() >= self.config.max_series {
                    self.dropped += 1;
                    continue;
                }
                self.series.insert(
                    h,
                    Tracked {
                        labels: s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                        last_ms: i64::MIN,
                        detector: SeriesDetector::new(&self.config.detectors),
                    },
                );
            }
            let Some(t) = self.series.get_mut(&h) else { continue };
            if s.timestamp_ms <= t.last_ms {
                self.out_of_order += 1;
                continue;
            }
            t.last_ms = s.timestamp_ms;
            #[allow(clippy::cast_sign_loss)]
            let ns = s.timestamp_ms.max(0) as u64 * 1_000_000;
            let (score, finished) = t.detector.update(&self.config.detectors, ns, s.value);
            if !score.learning {
                let metric = t.labels.get("__name__").cloned().unwrap_or_default();
                let l = labels_of(
                    t.labels
                        .iter()
                        .filter(|(k, _)| k.as_str() != "__name__")
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .chain([("__name__", "dwcp_anomaly_score"), ("metric", metric.as_str())]),
                );
                scores.push(Sample::new(l, score.score, s.timestamp_ms));
            }
            if let Some(e) = finished {
                episodes.push(AnomalyRecord {
                    labels: t.labels.clone(),
                    episode: e,
                    closed: true,
                });
            }
        }
    }

    /// Snapshot of every series' state (labels, last time, detector).
    pub fn snapshot(&self) -> AnomalyState {
        AnomalyState(self.series.iter().map(|(h, t)| (*h, t.clone())).collect())
    }

    /// Restores a snapshot taken by [`AnomalyOperator::snapshot`].
    pub fn restore(&mut self, state: AnomalyState) {
        self.series.extend(state.0);
    }
}

/// The operator's state, serde data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnomalyState(Vec<(u64, Tracked)>);

impl AnomalyState {
    /// Series in it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
