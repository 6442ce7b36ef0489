//! Per-series anomaly detection over event time: a learned baseline and four detectors, an
//! ensemble score in [0, 1], and episodes (one record per anomaly, not one per point).
//!
//! Detectors, each a z-score mapped to [0, 1] by `score(z) = clamp((z − z_low) / (z_high −
//! z_low), 0, 1)` (defaults 3 and 12, so the default threshold 0.375 is z = 6.4):
//!
//! - `three_sigma`: distance from the mean of the last `window` values, in their standard
//!   deviations;
//! - `moving_average`: distance from the mean of the last `ma_window` values, in the window's
//!   standard deviation (catches level shifts faster);
//! - `ewma`: distance from the exponentially weighted mean, in the exponentially weighted
//!   standard deviation (`alpha`);
//! - `seasonal`: distance from the daily profile (`season_bins` bins of the day, each an
//!   exponentially weighted mean and variance, a new point weighing `decay`), once every bin has
//!   been seen twice: broken seasonality;
//! - `holt_winters`: additive Holt-Winters with a damped trend and two seasons, the day
//!   (`season_bins` bins) once the series has two days of history and the week (168 hourly bins)
//!   once it has two weeks (each season is learned from the start, on what the model without it
//!   leaves over, and joins the forecast when it has its history); the distance of the point from
//!   the one-step forecast, in the exponentially weighted deviation of the forecast errors;
//! - `isolation_forest`: an isolation forest per group of series over each point's features
//!   against its window ([`forest`]), retrained on a schedule off the stream's thread; its
//!   isolation score mapped to [0, 1] from `forest_low` to `forest_high`;
//! - `new_extreme`: a point beyond everything the series has shown, by `extreme_margin` of its
//!   range, is anomalous whatever the others say (the ensemble score is then 1), as Numenta's
//!   detector flags "spatial" anomalies.
//!
//! A point within the range that one hour of the day showed the day before, within
//! `recurrence_hours` of the point's time of day (widened by `recurrence_margin` of that range),
//! is recurrent: a nightly job's spike, a daily batch's dip. Its ensemble score is multiplied by
//! `recurrence_factor`, so such an event opens an episode the first day only. (On NAB this
//! removed a fifth of the false positives, most of them daily spikes in the AWS series.)
//!
//! The ensemble score is the mean of the enabled detectors' scores (`mean_ensemble`, the
//! default; a detector counts once it can score: the profile once trained, the forest once one
//! is in use) or their maximum;
//! the detectors at or above the threshold are the ones that agreed. Enabled by default:
//! three-sigma, seasonal, the isolation forest and new extremes. A series is `learning` for its first `learning_points` points: it emits nothing.
//! An episode starts at the first point scoring at or above `threshold` and ends after
//! `episode_gap` points below it, with its peak. State is about 3.7 KiB per series (the window
//! as `f32`, the profile, the Holt-Winters seasons, each hour's range on the last two days) and
//! serde data: a snapshot restored gives the same scores.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::EventTime;

pub mod forest;
pub mod operator;

use forest::ForestState;

/// Configuration, shared by all series of a selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Points before a series has a baseline.
    pub learning_points: usize,
    /// Window of the three-sigma detector, points.
    pub window: usize,
    /// Window of the moving-average detector, points.
    pub ma_window: usize,
    /// Smoothing of the EWMA detector and of the forecast errors' deviation.
    pub alpha: f64,
    /// Weight of a new point in the seasonal profile (how fast the baseline's seasons adapt).
    pub decay: f64,
    /// Holt-Winters smoothing: level.
    pub hw_alpha: f64,
    /// Holt-Winters smoothing: trend (damped by 0.98 a point).
    pub hw_beta: f64,
    /// Holt-Winters smoothing: seasons.
    pub hw_gamma: f64,
    /// Isolation forest: trees.
    pub forest_trees: usize,
    /// Isolation forest: feature vectors per tree.
    pub forest_sample: usize,
    /// Isolation forest: the recent feature vectors a training draws from.
    pub forest_buffer: usize,
    /// Isolation forest: points of the group between trainings.
    pub forest_retrain_points: usize,
    /// Isolation forest: points between a training's start and its forest taking over.
    pub forest_install_points: usize,
    /// Isolation score that maps to 0.
    pub forest_low: f64,
    /// Isolation score that maps to 1.
    pub forest_high: f64,
    /// Bins of the daily profile.
    pub season_bins: usize,
    /// Ensemble score at which an episode starts.
    pub threshold: f64,
    /// Points below the threshold that end an episode.
    pub episode_gap: usize,
    /// Which detectors count.
    pub enabled: Enabled,
    /// Ensemble: the mean of the enabled detectors' scores (`true`) or their maximum.
    pub mean_ensemble: bool,
    /// z-score that maps to 0.
    pub z_low: f64,
    /// z-score that maps to 1.
    pub z_high: f64,
    /// How far beyond the series' range (as a share of it) a new extreme is anomalous.
    pub extreme_margin: f64,
    /// Hours either side of a point's time of day in which the day before is searched for
    /// the same value (0: off): a point within the range the series showed then is recurrent.
    pub recurrence_hours: f64,
    /// Factor on a recurrent point's score (at most 0.25 with the default: below the default
    /// threshold).
    pub recurrence_factor: f64,
    /// How far beyond the day before's range in those hours (as a share of it) a value still
    /// counts as within it.
    pub recurrence_margin: f64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            learning_points: 100,
            window: 200,
            ma_window: 10,
            alpha: 0.05,
            decay: 0.3,
            hw_alpha: 0.2,
            hw_beta: 0.01,
            hw_gamma: 0.1,
            forest_trees: 100,
            forest_sample: 256,
            forest_buffer: 4096,
            forest_retrain_points: 1024,
            forest_install_points: 64,
            forest_low: 0.6,
            forest_high: 0.85,
            season_bins: 48,
            threshold: 0.325,
            episode_gap: 120,
            enabled: Enabled::default(),
            mean_ensemble: true,
            z_low: 3.0,
            z_high: 12.0,
            extreme_margin: 0.1,
            recurrence_hours: 2.0,
            recurrence_factor: 0.25,
            recurrence_margin: 0.05,
        }
    }
}

/// Detector names, in score order.
pub const DETECTORS: [&str; 7] = [
    "three_sigma",
    "moving_average",
    "ewma",
    "seasonal",
    "holt_winters",
    "isolation_forest",
    "new_extreme",
];

/// Which detectors count towards the ensemble score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enabled {
    /// Three-sigma over the window.
    pub three_sigma: bool,
    /// Moving-average deviation.
    pub moving_average: bool,
    /// EWMA deviation.
    pub ewma: bool,
    /// The daily profile.
    pub seasonal: bool,
    /// Holt-Winters forecast error.
    pub holt_winters: bool,
    /// The group's isolation forest.
    pub isolation_forest: bool,
    /// A new extreme beyond the series' range.
    pub new_extreme: bool,
}

impl Default for Enabled {
    /// Three-sigma, the daily profile, the isolation forest and new extremes. Moving average,
    /// EWMA and Holt-Winters are off by default: on the NAB corpus (little seasonality) they add false positives faster than
    /// detections (benches/README.md has the figures); Holt-Winters is for series with daily and
    /// weekly cycles.
    fn default() -> Self {
        Enabled {
            three_sigma: true,
            moving_average: false,
            ewma: false,
            seasonal: true,
            holt_winters: false,
            isolation_forest: true,
            new_extreme: true,
        }
    }
}

impl Enabled {
    /// In [`DETECTORS`] order.
    pub fn as_array(self) -> [bool; 7] {
        [
            self.three_sigma,
            self.moving_average,
            self.ewma,
            self.seasonal,
            self.holt_winters,
            self.isolation_forest,
            self.new_extreme,
        ]
    }

    /// Only the detector at `i` in [`DETECTORS`] order.
    pub fn only(i: usize) -> Self {
        Enabled {
            three_sigma: i == 0,
            moving_average: i == 1,
            ewma: i == 2,
            seasonal: i == 3,
            holt_winters: i == 4,
            isolation_forest: i == 5,
            new_extreme: i == 6,
        }
    }

    /// All of them.
    pub fn all() -> Self {
        Enabled {
            three_sigma: true,
            moving_average: true,
            ewma: true,
            seasonal: true,
            holt_winters: true,
            isolation_forest: true,
            new_extreme: true,
        }
    }
}

/// Maps a z-score to [0, 1]: `z_low` to 0, `z_high` to 1, linear between.
pub fn z_score(z: f64, c: &AnomalyConfig) -> f64 {
    if z.is_nan() {
        return 0.0;
    }
    ((z - c.z_low) / (c.z_high - c.z_low).max(1e-9)).clamp(0.0, 1.0)
}

/// The baseline of a series, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Points seen.
    pub count: u64,
    /// Mean and standard deviation over the window.
    pub mean: f64,
    /// Standard deviation over the window.
    pub stddev: f64,
    /// Minimum and maximum seen.
    pub min: f64,
    /// Maximum seen.
    pub max: f64,
    /// Median of the window.
    pub median: f64,
    /// Moving average (`ma_window`).
    pub moving_average: f64,
    /// Exponential smoothing.
    pub ewma: f64,
}

/// What one point scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointScore {
    /// Ensemble score in [0, 1]; 0 while learning.
    pub score: f64,
    /// Each detector's score, in [`DETECTORS`] order.
    pub detectors: [f64; 7],
    /// The expected value (the window mean, or the seasonal profile once trained).
    pub expected: f64,
    /// Half-width of the normal band (4 standard deviations).
    pub band: f64,
    /// Whether the series is still learning.
    pub learning: bool,
}

/// An anomaly episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// First anomalous point, ns.
    pub start: EventTime,
    /// Last anomalous point, ns.
    pub end: EventTime,
    /// Time of the peak score, ns.
    pub peak_time: EventTime,
    /// Peak ensemble score.
    pub peak_score: f64,
    /// Value at the peak.
    pub value: f64,
    /// Expected value at the peak.
    pub expected: f64,
    /// Band half-width at the peak.
    pub band: f64,
    /// Detectors at or above the threshold at the peak.
    pub detectors: Vec<String>,
    /// The baseline at the peak.
    pub baseline: Baseline,
}

/// One series' detector state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesDetector {
    count: u64,
    #[serde(deserialize_with = "compact")]
    window: VecDeque<f32>,
    ewma: f64,
    ewvar: f64,
    min: f64,
    max: f64,
    /// Per bin of the day: (mean, variance, points).
    #[serde(deserialize_with = "compact")]
    profile: Vec<(f32, f32, u16)>,
    /// Holt-Winters: the first point's time, level, trend, the day's and the week's seasonal
    /// components, and the exponentially weighted variance of the forecast errors.
    #[serde(default)]
    first_t: EventTime,
    #[serde(default)]
    hw_level: f64,
    #[serde(default)]
    hw_trend: f64,
    #[serde(default, deserialize_with = "compact")]
    hw_day: Vec<f32>,
    #[serde(default, deserialize_with = "compact")]
    hw_week: Vec<f32>,
    /// Points each seasonal bin has learned (a bin's first points set it as their mean).
    #[serde(default, deserialize_with = "compact")]
    hw_day_n: Vec<u16>,
    #[serde(default, deserialize_with = "compact")]
    hw_week_n: Vec<u16>,
    #[serde(default)]
    hw_var: f64,
    /// Per bin of the day: the range of its values on the last two days it saw.
    #[serde(default, deserialize_with = "compact")]
    recurrent: Vec<DayRange>,
    episode: Option<Episode>,
    below: usize,
}

/// Collections restored from a snapshot hold what they had, not the power of two a growing
/// deserializer leaves (state per series is a budget: 4 KiB).
trait Compact {
    fn compact(&mut self);
}

impl<T> Compact for Vec<T> {
    fn compact(&mut self) {
        self.shrink_to_fit();
    }
}

impl<T> Compact for VecDeque<T> {
    fn compact(&mut self) {
        self.shrink_to_fit();
    }
}

fn compact<'de, D: serde::Deserializer<'de>, C: Deserialize<'de> + Compact>(d: D) -> Result<C, D::Error> {
    let mut c = C::deserialize(d)?;
    c.compact();
    Ok(c)
}

/// The range (min, max) of one bin of the day's values on the last day it saw and on the day
/// before that (when that was the calendar day before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct DayRange {
    day: u32,
    last: Option<(f32, f32)>,
    before: Option<(f32, f32)>,
}

impl DayRange {
    /// The range on `day`, if this bin saw that day.
    fn on(&self, day: u32) -> Option<(f32, f32)> {
        if day == self.day {
            self.last
        } else if day + 1 == self.day {
            self.before
        } else {
            None
        }
    }

    #[allow(clippy::cast_possible_truncation)]
    fn learn(&mut self, day: u32, x: f64) {
        let x = x as f32;
        match self.last {
            Some((lo, hi)) if day == self.day => self.last = Some((lo.min(x), hi.max(x))),
            last => {
                self.before = if day == self.day + 1 { last } else { None };
                self.day = day;
                self.last = Some((x, x));
            }
        }
    }
}

/// Days since the epoch.
#[allow(clippy::cast_possible_truncation)]
fn day_of(t: EventTime) -> u32 {
    (t / DAY) as u32
}

fn mean_std(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let mut n = 0.0;
    let mut s = 0.0;
    for x in v.clone() {
        n += 1.0;
        s += x;
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let m = s / n;
    let var = v.map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

const DAY: u64 = 86_400_000_000_000;
const WEEK: u64 = 7 * DAY;
/// Bins of the day the recurrence check keeps ranges for.
const RECURRENCE_BINS: usize = 24;
/// Hourly bins of the week.
const WEEK_BINS: usize = 168;
/// Damping of the Holt-Winters trend, per point.
const HW_DAMPING: f64 = 0.98;

impl SeriesDetector {
    /// A fresh detector.
    pub fn new(config: &AnomalyConfig) -> Self {
        SeriesDetector {
            count: 0,
            window: VecDeque::with_capacity(config.window),
            ewma: 0.0,
            ewvar: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            profile: vec![(0.0, 0.0, 0); config.season_bins.max(1)],
            first_t: 0,
            hw_level: 0.0,
            hw_trend: 0.0,
            hw_day: vec![0.0; config.season_bins.max(1)],
            hw_week: vec![0.0; WEEK_BINS],
            hw_day_n: vec![0; config.season_bins.max(1)],
            hw_week_n: vec![0; WEEK_BINS],
            hw_var: 0.0,
            recurrent: vec![DayRange::default(); RECURRENCE_BINS],
            episode: None,
            below: 0,
        }
    }

    /// Bytes of state.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.window.capacity() * std::mem::size_of::<f32>()
            + self.profile.capacity() * std::mem::size_of::<(f32, f32, u16)>()
            + (self.hw_day.capacity() + self.hw_week.capacity()) * std::mem::size_of::<f32>()
            + (self.hw_day_n.capacity() + self.hw_week_n.capacity()) * std::mem::size_of::<u16>()
            + self.recurrent.capacity() * std::mem::size_of::<DayRange>()
    }

    /// The baseline now.
    pub fn baseline(&self, config: &AnomalyConfig) -> Baseline {
        let w = self.window.iter().map(|x| f64::from(*x));
        let (mean, stddev) = mean_std(w.clone());
        let mut sorted: Vec<f64> = w.collect();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let k = config.ma_window.min(self.window.len()).max(1);
        let ma = self.window.iter().rev().take(k).map(|x| f64::from(*x)).sum::<f64>() / k as f64;
        Baseline {
            count: self.count,
            mean,
            stddev,
            min: self.min,
            max: self.max,
            median,
            moving_average: ma,
            ewma: self.ewma,
        }
    }

    /// Scores the point `x` at `t` against the state before it, then learns it. A finished
    /// episode is returned when this point ends one.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub fn update(&mut self, config: &AnomalyConfig, t: EventTime, x: f64) -> (PointScore, Option<Episode>) {
        self.update_with_forest(config, t, x, None)
    }

    /// [`SeriesDetector::update`] with the group's isolation forest (scored when enabled).
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::too_many_lines
    )]
    pub fn update_with_forest(
        &mut self,
        config: &AnomalyConfig,
        t: EventTime,
        x: f64,
        forest: Option<&mut ForestState>,
    ) -> (PointScore, Option<Episode>) {
        if !x.is_finite() {
            return (
                PointScore {
                    score: 0.0,
                    detectors: [0.0; 7],
                    expected: f64::NAN,
                    band: f64::NAN,
                    learning: self.count < config.learning_points as u64,
                },
                None,
            );
        }
        let learning = self.count < config.learning_points as u64;
        let bins = self.profile.len();
        // A snapshot from before Holt-Winters (or from other settings) has no seasons to match.
        if self.hw_day.len() != bins || self.hw_week.len() != WEEK_BINS {
            self.hw_day = vec![0.0; bins];
            self.hw_day_n = vec![0; bins];
            self.hw_week = vec![0.0; WEEK_BINS];
            self.hw_week_n = vec![0; WEEK_BINS];
        }
        let bin = ((t % DAY) as f64 / DAY as f64 * bins as f64) as usize % bins;
        let mut det = [0.0; 7];
        // Which detectors have something to say yet: the mean ensemble averages those.
        // (`new_extreme` overrides the ensemble rather than joining its mean.)
        let mut ready = [true, true, true, false, true, false, false];
        let week_bin = ((t % WEEK) / (WEEK / WEEK_BINS as u64)) as usize % WEEK_BINS;
        if self.count == 0 {
            self.first_t = t;
        }
        let history = t.saturating_sub(self.first_t);
        let (with_day, with_week) = (history >= 2 * DAY, history >= 2 * WEEK);
        // The forecast of the model without seasons, with the seasons it has history for.
        let hw_base = self.hw_level + HW_DAMPING * self.hw_trend;
        let hw_day = f64::from(self.hw_day[bin]);
        let hw_week = f64::from(self.hw_week[week_bin]);
        let forecast = hw_base + if with_day { hw_day } else { 0.0 } + if with_week { hw_week } else { 0.0 };
        let (mean, std) = mean_std(self.window.iter().map(|v| f64::from(*v)));
        // A floor on the deviation: a flat series' first change is an anomaly, not a division
        // by zero; relative to the level, so units do not matter.
        let floor = (mean.abs() * 1e-3).max(1e-9);
        let std = std.max(floor);
        let mut expected = mean;
        let mut band = 4.0 * std;
        if !learning {
            det[0] = z_score((x - mean).abs() / std, config);
            let k = config.ma_window.min(self.window.len()).max(1);
            let ma = self.window.iter().rev().take(k).map(|v| f64::from(*v)).sum::<f64>() / k as f64;
            det[1] = z_score((x - ma).abs() / std, config);
            det[2] = z_score((x - self.ewma).abs() / self.ewvar.sqrt().max(floor), config);
            let trained = self.profile.iter().all(|p| p.2 >= 2);
            if trained {
                ready[3] = true;
                let (pm, pv, _) = self.profile[bin];
                let psd = f64::from(pv).sqrt().max(std * 0.25).max(floor);
                det[3] = z_score((x - f64::from(pm)).abs() / psd, config);
                expected = f64::from(pm);
                band = 4.0 * psd;
            }
            let hw_sd = self.hw_var.sqrt().max(floor);
            det[4] = z_score((x - forecast).abs() / hw_sd, config);
            if let (true, Some(forest)) = (config.enabled.isolation_forest, forest) {
                let short = self.window.iter().rev().take(k).map(|v| f64::from(*v));
                let (_, short_std) = mean_std(short);
                let prev = self.window.back().map_or(x, |v| f64::from(*v));
                let hour = (t % DAY) as f64 / 3.6e12;
                let f = forest::features(x, prev, mean, std, ma, short_std, hour);
                if let Some(s) = forest.observe(config, f) {
                    ready[5] = true;
                    det[5] =
                        ((s - config.forest_low) / (config.forest_high - config.forest_low).max(1e-9)).clamp(0.0, 1.0);
                }
            }
            if config.enabled.holt_winters && with_day {
                expected = forecast;
                band = 4.0 * hw_sd;
            }
            if self.max > self.min {
                let margin = config.extreme_margin * (self.max - self.min);
                if x > self.max + margin || x < self.min - margin {
                    det[6] = 1.0;
                }
            }
        }
        for (d, on) in det.iter_mut().zip(config.enabled.as_array()) {
            if !on {
                *d = 0.0;
            }
        }
        let on = config
            .enabled
            .as_array()
            .iter()
            .zip(ready)
            .filter(|(e, r)| **e && *r)
            .count()
            .max(1);
        #[allow(clippy::cast_precision_loss)]
        let score = if config.mean_ensemble {
            (det[..6].iter().sum::<f64>() / on as f64).max(det[6])
        } else {
            det.iter().copied().fold(0.0, f64::max)
        };
        // A value the series reached at about this time the day before is a daily event, not
        // an anomaly (a nightly job's spike, a batch's dip).
        if self.recurrent.len() != RECURRENCE_BINS {
            self.recurrent = vec![DayRange::default(); RECURRENCE_BINS];
        }
        let score = if score > 0.0 && self.seen_the_day_before(config, t, x) {
            score * config.recurrence_factor
        } else {
            score
        };
        let rbin = ((t % DAY) / (DAY / RECURRENCE_BINS as u64)) as usize % RECURRENCE_BINS;
        self.recurrent[rbin].learn(day_of(t), x);
        // The baseline the point was judged against, for the episode record.
        let anomalous = !learning && score >= config.threshold;
        let judged = anomalous.then(|| self.baseline(config));
        // Learn.
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if self.window.len() == config.window.max(1) {
            self.window.pop_front();
        } else if self.window.len() == self.window.capacity() {
            // A restored window that is not full yet grows to its size, not to a power of two.
            self.window.reserve_exact(config.window.max(1) - self.window.len());
        }
        self.window.push_back(x as f32);
        let a = config.alpha;
        if self.count == 1 {
            self.ewma = x;
        } else {
            let d = x - self.ewma;
            self.ewma += a * d;
            self.ewvar = (1.0 - a) * (self.ewvar + a * d * d);
        }
        let p = &mut self.profile[bin];
        let w = config.decay.clamp(0.0, 1.0);
        if p.2 == 0 {
            *p = (x as f32, 0.0, 1);
        } else {
            let d = x - f64::from(p.0);
            let m = f64::from(p.0) + w * d;
            let v = (1.0 - w) * (f64::from(p.1) + w * d * d);
            *p = (m as f32, v as f32, p.2.saturating_add(1));
        }
        self.learn_holt_winters(
            config,
            x,
            forecast,
            (bin, hw_day, with_day),
            (week_bin, hw_week, with_week),
        );
        let ps = PointScore {
            score,
            detectors: det,
            expected,
            band,
            learning,
        };
        // Episodes.
        let mut finished = None;
        if let Some(baseline) = judged {
            self.below = 0;
            let names: Vec<String> = DETECTORS
                .iter()
                .zip(det)
                .filter(|(_, s)| *s >= config.threshold)
                .map(|(n, _)| (*n).to_string())
                .collect();
            match &mut self.episode {
                Some(e) => {
                    e.end = t;
                    if score > e.peak_score {
                        e.peak_score = score;
                        e.peak_time = t;
                        e.value = x;
                        e.expected = expected;
                        e.band = band;
                        e.detectors = names;
                        e.baseline = baseline;
                    }
                }
                None => {
                    self.episode = Some(Episode {
                        start: t,
                        end: t,
                        peak_time: t,
                        peak_score: score,
                        value: x,
                        expected,
                        band,
                        detectors: names,
                        baseline,
                    });
                }
            }
        } else if self.episode.is_some() {
            self.below += 1;
            if self.below >= config.episode_gap {
                finished = self.episode.take();
                self.below = 0;
            }
        }
        (ps, finished)
    }

    /// One Holt-Winters step (error-correction form) after a point `x` that was forecast as
    /// `forecast`: level and damped trend from the error; each season from what the model
    /// without it leaves over, so a season learns before it joins the forecast.
    fn learn_holt_winters(
        &mut self,
        config: &AnomalyConfig,
        x: f64,
        forecast: f64,
        (day_bin, day, with_day): (usize, f64, bool),
        (week_bin, week, with_week): (usize, f64, bool),
    ) {
        if self.count == 1 {
            self.hw_level = x;
            return;
        }
        let e = x - forecast;
        let a = config.alpha;
        self.hw_var = (1.0 - a) * (self.hw_var + a * e * e);
        let base = self.hw_level + HW_DAMPING * self.hw_trend;
        self.hw_level = base + config.hw_alpha * e;
        self.hw_trend = HW_DAMPING * self.hw_trend + config.hw_alpha * config.hw_beta * e;
        // A bin's first points set it to their mean (the usual initialization from the first
        // seasons), later ones move it by `hw_gamma`.
        let gain = |n: &mut u16| {
            *n = n.saturating_add(1);
            config.hw_gamma.max(1.0 / f64::from(*n))
        };
        let day_left = x - base - if with_week { week } else { 0.0 };
        let week_left = x - base - if with_day { day } else { 0.0 };
        let (gd, gw) = (gain(&mut self.hw_day_n[day_bin]), gain(&mut self.hw_week_n[week_bin]));
        #[allow(clippy::cast_possible_truncation)]
        {
            self.hw_day[day_bin] = (day + gd * (day_left - day)) as f32;
            self.hw_week[week_bin] = (week + gw * (week_left - week)) as f32;
        }
    }

    /// Whether `x` lies within the range the series showed the day before, within
    /// `recurrence_hours` of `t`'s time of day (widened by `recurrence_margin`).
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn seen_the_day_before(&self, config: &AnomalyConfig, t: EventTime, x: f64) -> bool {
        let bins = RECURRENCE_BINS as u64;
        if config.recurrence_hours.is_nan() || config.recurrence_hours <= 0.0 {
            return false;
        }
        // At most the whole day before.
        let reach = ((config.recurrence_hours * bins as f64 / 24.0).round() as u64).min(bins / 2);
        let bin_ns = DAY / bins;
        // This time the day before, in bins since the epoch.
        let Some(center) = (t / bin_ns).checked_sub(bins) else {
            return false;
        };
        (center.saturating_sub(reach)..=center + reach).any(|abs| {
            let (day, bin) = (abs / bins, (abs % bins) as usize);
            u32::try_from(day)
                .ok()
                .and_then(|day| self.recurrent[bin].on(day))
                .is_some_and(|(lo, hi)| {
                    let (lo, hi) = (f64::from(lo), f64::from(hi));
                    let margin = config.recurrence_margin * (hi - lo);
                    lo - margin <= x && x <= hi + margin
                })
        })
    }

    /// Whether an episode is open (and since when, ns).
    pub fn open_episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }
}

#[cfg(test)]
mod tests;
