//! SLA accounting: compliance, error budget, burn rates and the SRE workbook's multiwindow,
//! multi-burn-rate alerts, from good/total observations in event time.
//!
//! Every SLA kind reduces to good and total counts per minute: availability (good and total
//! requests, or an `up`-style series sampled as good = up), latency (requests under the
//! threshold over all requests, from a histogram) and throughput (a minute is good when the
//! rate reached the floor; total = 1 per minute). The pipeline derives those; this operator
//! keeps the counts compactly and answers:
//!
//! - compliance over the rolling period (default 30 days) and over the calendar month;
//! - the error budget: allowed bad share `1 - target`, consumed share, remaining share and
//!   remaining time (`period × (1 − target) × remaining`);
//! - burn rates over 5m, 30m, 1h, 6h and 3d: `(bad / total over the window) / (1 − target)`;
//! - alerts: page when 1h and 5m both burn above 14.4, or 6h and 30m above 6; ticket when 3d
//!   and 6h burn above 1;
//! - violations: runs of minutes whose good share fell below the target, with start, end and
//!   worst value (the last 100 kept).
//!
//! State: per-minute buckets for the last 6 hours (burn-rate windows up to 6h) and per-hour
//! buckets for the period (compliance, the 3d window): 361 × 12 + 721 × 12 bytes ≈ 13 KiB for
//! 30 days, whatever the traffic. Counts are `f32` per bucket (exact to 16.7 M per minute or
//! hour, relative error below 10⁻⁷ beyond) and summed in `f64`. It is serde data: snapshot and
//! restore give the same answers.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::EventTime;

const MINUTE: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MINUTE;
/// Minutes kept: the longest burn-rate window served from minutes (6h); longer ones use hours.
const MINUTES_KEPT: u32 = 360;

/// The three SLA kinds of the design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaKind {
    /// Good over total requests.
    Availability,
    /// Requests under a latency threshold over all requests.
    Latency,
    /// Minutes at or above a throughput floor over all minutes.
    Throughput,
}

/// An SLA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SlaKind,
    /// Target share of good, e.g. 0.9995.
    pub target: f64,
    /// Rolling period in days.
    #[serde(default = "default_period")]
    pub period_days: u32,
}

fn default_period() -> u32 {
    30
}

/// The burn-rate windows, in minutes, with their names.
pub const BURN_WINDOWS: [(&str, u64); 5] = [("5m", 5), ("30m", 30), ("1h", 60), ("6h", 360), ("3d", 4320)];

/// A violation: consecutive minutes below target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// First bad minute's start, ns.
    pub start: EventTime,
    /// End of the last bad minute, ns; `None` while it lasts.
    pub end: Option<EventTime>,
    /// Lowest good share of a minute in it.
    pub worst: f64,
}

/// Multiwindow alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BurnAlert {
    /// 14.4× over 1h and 5m, or 6× over 6h and 30m.
    Page,
    /// 1× over 3d and 6h.
    Ticket,
}

/// What the tracker reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaReport {
    /// Name.
    pub name: String,
    /// Good share over the rolling period (1 when there was no traffic).
    pub compliance: f64,
    /// Good share over the current calendar month.
    pub month_compliance: f64,
    /// `compliance >= target`.
    pub compliant: bool,
    /// `1 - target`.
    pub budget_allowed: f64,
    /// Consumed share of the budget (above 1 when exhausted).
    pub budget_consumed: f64,
    /// `1 - consumed`, may be negative.
    pub budget_remaining: f64,
    /// Remaining budget as time, seconds (negative when overspent).
    pub budget_remaining_seconds: f64,
    /// Burn rates by window name.
    pub burn_rates: Vec<(String, f64)>,
    /// The multiwindow alert, if any.
    pub alert: Option<BurnAlert>,
    /// Recent violations.
    pub violations: Vec<Violation>,
}

/// The tracker of one SLA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaTracker {
    config: SlaConfig,
    /// (minute index, good, total), the last 6 hours.
    minutes: VecDeque<(u32, f32, f32)>,
    /// (hour index, good, total), the period.
    hours: VecDeque<(u32, f32, f32)>,
    /// (month key `year*12+month`, good, total).
    month: (i64, f64, f64),
    violations: VecDeque<Violation>,
    now: EventTime,
    /// Minutes before this one have been judged for violations.
    judged: u32,
}

/// `year * 12 + month0` of a Unix time.
fn month_key(nanos: u64) -> i64 {
    #[allow(clippy::cast_possible_wrap)]
    let (y, m, _) = crate::civil_from_days((nanos / 86_400_000_000_000) as i64);
    y * 12 + i64::from(m) - 1
}

impl SlaTracker {
    /// A tracker.
    pub fn new(config: SlaConfig) -> Self {
        SlaTracker {
            config,
            minutes: VecDeque::new(),
            hours: VecDeque::new(),
            month: (0, 0.0, 0.0),
            violations: VecDeque::new(),
            now: 0,
            judged: 0,
        }
    }

    /// Replaces the configuration, keeping the counts (a restored tracker under an edited SLA).
    pub fn reconfigure(&mut self, config: SlaConfig) {
        self.config = config;
        self.trim();
    }

    /// Adds `good` of `total` at event time `t`. Observations for minutes already past the
    /// 3-day minute window count in the hours (and the month) only.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    pub fn observe(&mut self, t: EventTime, good: f64, total: f64) {
        if total <= 0.0 || !good.is_finite() || !total.is_finite() {
            return;
        }
        let good = good.clamp(0.0, total);
        let minute = (t / MINUTE) as u32;
        let hour = (t / HOUR) as u32;
        self.now = self.now.max(t);
        // Minutes.
        match self.minutes.iter_mut().rev().find(|m| m.0 == minute) {
            Some(m) => {
                m.1 += good as f32;
                m.2 += total as f32;
            }
            None => {
                let pos = self
                    .minutes
                    .iter()
                    .position(|m| m.0 > minute)
                    .unwrap_or(self.minutes.len());
                self.minutes.insert(pos, (minute, good as f32, total as f32));
            }
        }
        // Hours.
        match self.hours.iter_mut().rev().find(|h| h.0 == hour) {
            Some(h) => {
                h.1 += good as f32;
                h.2 += total as f32;
            }
            None => {
                let pos = self.hours.iter().position(|h| h.0 > hour).unwrap_or(self.hours.len());
                self.hours.insert(pos, (hour, good as f32, total as f32));
            }
        }
        // Calendar month.
        let mk = month_key(t);
        if mk > self.month.0 {
            self.month = (mk, 0.0, 0.0);
        }
        if mk == self.month.0 {
            self.month.1 += good;
            self.month.2 += total;
        }
        self.trim();
    }

    /// Keeps the minutes of the last 6 hours and the hours of the period (both ending now).
    #[allow(clippy::cast_possible_truncation)]
    fn trim(&mut self) {
        let now_min = (self.now / MINUTE) as u32;
        while self.minutes.front().is_some_and(|m| m.0 + MINUTES_KEPT < now_min) {
            self.minutes.pop_front();
        }
        let now_hour = (self.now / HOUR) as u32;
        let period_hours = self.config.period_days * 24;
        while self.hours.front().is_some_and(|h| h.0 + period_hours < now_hour) {
            self.hours.pop_front();
        }
    }

    /// Closes the minutes before `t` for violation tracking (call as event time advances).
    #[allow(clippy::cast_possible_truncation)]
    pub fn on_watermark(&mut self, t: EventTime) {
        self.now = self.now.max(t);
        let closed = (t / MINUTE) as u32;
        let first = self.minutes.front().map_or(closed, |m| m.0);
        let from = self.judged.max(first).max(closed.saturating_sub(MINUTES_KEPT));
        for m in from..closed {
            let share = self
                .minutes
                .iter()
                .find(|b| b.0 == m)
                .map(|b| f64::from(b.1) / f64::from(b.2));
            let start = u64::from(m) * MINUTE;
            let open = self.violations.back_mut().filter(|v| v.end.is_none());
            match (share, open) {
                (Some(sh), Some(v)) if sh < self.config.target => v.worst = v.worst.min(sh),
                (Some(sh), None) if sh < self.config.target => {
                    self.violations.push_back(Violation {
                        start,
                        end: None,
                        worst: sh,
                    });
                }
                (_, Some(v)) => v.end = Some(start),
                _ => {}
            }
        }
        while self.violations.len() > 100 {
            self.violations.pop_front();
        }
        self.judged = self.judged.max(closed);
        self.trim();
    }

    /// Good and total over `[now - window, now)`: from minutes when the window is at most 6
    /// hours, else from whole hours starting inside the window.
    fn sums(&self, window_minutes: u64) -> (f64, f64) {
        let from = self.now.saturating_sub(window_minutes * MINUTE);
        let add = |(g, t): (f64, f64), b: &(u32, f32, f32)| (g + f64::from(b.1), t + f64::from(b.2));
        if window_minutes <= u64::from(MINUTES_KEPT) {
            self.minutes
                .iter()
                .filter(|m| u64::from(m.0) * MINUTE >= from && u64::from(m.0) * MINUTE < self.now)
                .fold((0.0, 0.0), add)
        } else {
            self.hours
                .iter()
                .filter(|h| u64::from(h.0) * HOUR >= from && u64::from(h.0) * HOUR < self.now)
                .fold((0.0, 0.0), add)
        }
    }

    /// The burn rate over the last `minutes`.
    pub fn burn_rate(&self, minutes: u64) -> f64 {
        let (g, t) = self.sums(minutes);
        if t <= 0.0 {
            return 0.0;
        }
        ((t - g) / t) / (1.0 - self.config.target)
    }

    /// The report at the current event time.
    pub fn report(&self) -> SlaReport {
        let (g, t) = self
            .hours
            .iter()
            .fold((0.0, 0.0), |(g, t), h| (g + f64::from(h.1), t + f64::from(h.2)));
        let compliance = if t > 0.0 { g / t } else { 1.0 };
        let month_compliance = if self.month.2 > 0.0 {
            self.month.1 / self.month.2
        } else {
            1.0
        };
        let allowed = 1.0 - self.config.target;
        let consumed = if allowed > 0.0 {
            (1.0 - compliance) / allowed
        } else {
            0.0
        };
        let remaining = 1.0 - consumed;
        let period_seconds = f64::from(self.config.period_days) * 86_400.0;
        let burn_rates: Vec<(String, f64)> = BURN_WINDOWS
            .iter()
            .map(|(n, m)| ((*n).to_string(), self.burn_rate(*m)))
            .collect();
        let b = |n: &str| burn_rates.iter().find(|(k, _)| k == n).map_or(0.0, |(_, v)| *v);
        let alert = if (b("1h") > 14.4 && b("5m") > 14.4) || (b("6h") > 6.0 && b("30m") > 6.0) {
            Some(BurnAlert::Page)
        } else if b("3d") > 1.0 && b("6h") > 1.0 {
            Some(BurnAlert::Ticket)
        } else {
            None
        };
        SlaReport {
            name: self.config.name.clone(),
            compliance,
            month_compliance,
            compliant: compliance >= self.config.target,
            budget_allowed: allowed,
            budget_consumed: consumed,
            budget_remaining: remaining,
            budget_remaining_seconds: period_seconds * allowed * remaining,
            burn_rates,
            alert,
            violations: self.violations.iter().cloned().collect(),
        }
    }

    /// Bytes of state (buckets and violations), for the compactness figure.
    pub fn state_bytes(&self) -> usize {
        self.minutes.len() * std::mem::size_of::<(u32, f32, f32)>()
            + self.hours.len() * std::mem::size_of::<(u32, f32, f32)>()
            + self.violations.len() * std::mem::size_of::<Violation>()
    }
}

#[cfg(test)]
mod tests;
