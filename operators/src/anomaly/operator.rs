//! The anomaly operator: a [`SeriesDetector`] per series matching the configured selectors,
//! fed the Prometheus samples the pipeline produces; the score as `dwcp_anomaly_score` and each
//! episode as an [`AnomalyRecord`] when it opens and when it ends. Selectors come in groups, each with its own detector
//! settings (overrides of the shared ones); a series belongs to the first group that selects it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::forest::ForestState;
use super::{AnomalyConfig, Episode, SeriesDetector};
use crate::prom::{labels_of, FastMap, Sample};
use crate::selector::Selector;

/// Configuration: which series, and the detectors' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyOperatorConfig {
    /// Series selectors (Prometheus notation) watched with `detectors`.
    pub series: Vec<String>,
    /// Detector settings: of `series`, and the defaults of every group.
    pub detectors: AnomalyConfig,
    /// Further selectors with their own settings, tried in order before `series`.
    pub groups: Vec<AnomalyGroup>,
    /// Series tracked at most; samples of further series are counted and skipped.
    pub max_series: usize,
}

/// Selectors watched with their own detector settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyGroup {
    /// Series selectors.
    pub series: Vec<String>,
    /// Overrides of the shared `detectors` (any of its fields; `enabled` field by field).
    #[serde(default)]
    pub detectors: serde_yaml::Mapping,
}

impl AnomalyOperatorConfig {
    /// Whether any series is watched.
    pub fn is_active(&self) -> bool {
        !self.series.is_empty() || self.groups.iter().any(|g| !g.series.is_empty())
    }

    /// Each group's settings (the groups', then `series`'s), and the selectors with the index of
    /// their group.
    ///
    /// # Errors
    /// The field at fault: `groups[1].detectors: unknown field ...`, `groups[0].series[2]: ...`.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let base = serde_yaml::to_value(&self.detectors).map_err(|e| format!("detectors: {e}"))?;
        let mut configs = Vec::new();
        let mut selectors = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let mut merged = base.clone();
            merge(&mut merged, &serde_yaml::Value::Mapping(group.detectors.clone()));
            let c: AnomalyConfig = serde_yaml::from_value(merged).map_err(|e| format!("groups[{g}].detectors: {e}"))?;
            for (i, sel) in group.series.iter().enumerate() {
                selectors.push((
                    Selector::parse(sel).map_err(|e| format!("groups[{g}].series[{i}]: {e}"))?,
                    configs.len(),
                ));
            }
            configs.push(c);
        }
        for (i, sel) in self.series.iter().enumerate() {
            selectors.push((
                Selector::parse(sel).map_err(|e| format!("series[{i}]: {e}"))?,
                configs.len(),
            ));
        }
        configs.push(self.detectors.clone());
        Ok(Resolved { configs, selectors })
    }
}

/// Settings resolved from an [`AnomalyOperatorConfig`].
#[derive(Debug)]
pub struct Resolved {
    /// Each group's settings: the groups' in order, then those of `series`.
    pub configs: Vec<AnomalyConfig>,
    /// Every selector with the index of its group's settings.
    pub selectors: Vec<(Selector, usize)>,
}

/// `over` merged into `into`, objects field by field.
fn merge(into: &mut serde_yaml::Value, over: &serde_yaml::Value) {
    match (into, over) {
        (serde_yaml::Value::Mapping(a), serde_yaml::Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

impl Default for AnomalyOperatorConfig {
    fn default() -> Self {
        AnomalyOperatorConfig {
            series: Vec::new(),
            detectors: AnomalyConfig::default(),
            groups: Vec::new(),
            max_series: 100_000,
        }
    }
}

/// An episode of one series: when it opens (`closed` false) and when it ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyRecord {
    /// The series' labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// The episode.
    pub episode: Episode,
    /// Whether it has ended (false: it has just opened).
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
    /// Its group (index of its settings).
    #[serde(default)]
    group: usize,
}

/// The operator.
#[derive(Debug)]
pub struct AnomalyOperator {
    /// Selectors and the index of their group's settings in `configs`.
    selectors: Vec<(Selector, usize)>,
    configs: Vec<AnomalyConfig>,
    /// Each group's isolation forest.
    forests: Vec<ForestState>,
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
    /// The field at fault: a selector that does not parse, a group's setting that is not one.
    pub fn new(config: AnomalyOperatorConfig) -> Result<Self, String> {
        let Resolved { configs, selectors } = config.resolve()?;
        Ok(AnomalyOperator {
            selectors,
            forests: vec![ForestState::default(); configs.len()],
            configs,
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
            let Some(group) = self.selectors.iter().find(|(sel, _)| sel.matches(s)).map(|(_, g)| *g) else {
                continue;
            };
            let Some(config) = self.configs.get(group) else {
                continue;
            };
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
                        detector: SeriesDetector::new(config),
                        group,
                    },
                );
                if let Some(f) = self.forests.get_mut(group) {
                    f.series += 1;
                }
            }
            let Some(t) = self.series.get_mut(&h) else { continue };
            if s.timestamp_ms <= t.last_ms {
                self.out_of_order += 1;
                continue;
            }
            t.last_ms = s.timestamp_ms;
            #[allow(clippy::cast_sign_loss)]
            let ns = s.timestamp_ms.max(0) as u64 * 1_000_000;
            let was_open = t.detector.open_episode().is_some();
            let (score, finished) = t
                .detector
                .update_with_forest(config, ns, s.value, self.forests.get_mut(group));
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
            // An episode is published when it opens (at once, with this point as its peak so
            // far) and again when it ends (its end and peak), under the same key.
            if let (false, Some(e)) = (was_open, t.detector.open_episode()) {
                episodes.push(AnomalyRecord {
                    labels: t.labels.clone(),
                    episode: e.clone(),
                    closed: false,
                });
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
        AnomalyState {
            series: self.series.iter().map(|(h, t)| (*h, t.clone())).collect(),
            forests: self.forests.clone(),
        }
    }

    /// Restores a snapshot taken by [`AnomalyOperator::snapshot`] (forests only when the
    /// groups are as many as then).
    pub fn restore(&mut self, state: AnomalyState) {
        // Keyed anew from the labels: a snapshot of a build whose series hash differed restores
        // under today's.
        self.series.extend(state.series.into_iter().map(|(_, t)| {
            let labels: Vec<(&str, &str)> = t.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            (crate::prom::series_hash(&labels), t)
        }));
        if state.forests.len() == self.forests.len() {
            self.forests = state.forests;
        }
        for f in &mut self.forests {
            f.series = 0;
        }
        for t in self.series.values() {
            if let Some(f) = self.forests.get_mut(t.group) {
                f.series += 1;
            }
        }
    }

    /// Trainings of the isolation forests so far, and those whose forest was not ready in
    /// time (the stream waited).
    pub fn forest_trainings(&self) -> (u64, u64) {
        self.forests
            .iter()
            .fold((0, 0), |(n, w), f| (n + f.trainings(), w + f.waits))
    }
}

/// The operator's state, serde data: the series, and each group's forest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnomalyState {
    series: Vec<(u64, Tracked)>,
    forests: Vec<ForestState>,
}

impl<'de> Deserialize<'de> for AnomalyState {
    /// The current form, or the series list a snapshot held before the forests.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Current {
            series: Vec<(u64, Tracked)>,
            #[serde(default)]
            forests: Vec<ForestState>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Current(Current),
            Series(Vec<(u64, Tracked)>),
        }
        Ok(match Form::deserialize(d)? {
            Form::Current(c) => AnomalyState {
                series: c.series,
                forests: c.forests,
            },
            Form::Series(series) => AnomalyState {
                series,
                forests: Vec::new(),
            },
        })
    }
}

impl AnomalyState {
    /// Series in it.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}
