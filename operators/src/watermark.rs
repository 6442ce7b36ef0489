//! Event-time watermarks per input partition.
//!
//! Each partition's watermark is the largest event time it has shown minus the allowed
//! lateness; the operator watermark is the minimum over partitions that are not idle. A
//! partition that has shown nothing for `idle_timeout` of processing time stops holding the
//! watermark back. When every partition is idle, event time advances with the wall clock from
//! the newest record seen (the processing-time fallback for idle inputs), so the last windows
//! close even when the input stops.
//!
//! Timestamps far in the future (beyond `max_future_skew` of the processing time the caller
//! passes in) and zero timestamps do not move the watermark: one record stamped in the year 2300
//! must not close every window at once. They are counted in [`WatermarkTracker::ignored`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::EventTime;

/// Configuration of a [`WatermarkTracker`], in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkConfig {
    /// How far behind the largest event time the watermark stays.
    pub allowed_lateness: u64,
    /// Processing time after which a silent partition no longer holds the watermark back.
    pub idle_timeout: u64,
    /// Event times further than this ahead of processing time are ignored for the watermark.
    pub max_future_skew: u64,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            allowed_lateness: 2_000_000_000,
            idle_timeout: 30_000_000_000,
            max_future_skew: 3_600_000_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionMark {
    max_event_time: EventTime,
    last_seen_processing: EventTime,
    /// Registered and not heard from yet: holds the watermark until it shows data or goes idle.
    #[serde(default)]
    waiting: bool,
}

/// Tracks watermarks per partition, keyed by any ordered key (topic and partition, say).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatermarkTracker<K: Ord> {
    config: WatermarkConfig,
    partitions: BTreeMap<K, PartitionMark>,
    current: EventTime,
    ignored: u64,
}

impl<K: Ord + Clone> WatermarkTracker<K> {
    /// A tracker with no partitions; its watermark is 0.
    pub fn new(config: WatermarkConfig) -> Self {
        WatermarkTracker {
            config,
            partitions: BTreeMap::new(),
            current: 0,
            ignored: 0,
        }
    }

    /// Records an event time seen on `partition` at processing time `now`.
    pub fn observe(&mut self, partition: &K, event_time: EventTime, now: EventTime) {
        let valid = event_time != 0 && event_time <= now.saturating_add(self.config.max_future_skew);
        if !valid {
            self.ignored += 1;
        }
        let mark = self.partitions.entry(partition.clone()).or_insert(PartitionMark {
            max_event_time: 0,
            last_seen_processing: now,
            waiting: false,
        });
        mark.last_seen_processing = now;
        mark.waiting = false;
        if valid && event_time > mark.max_event_time {
            mark.max_event_time = event_time;
        }
    }

    /// Records the event times of a batch seen on `partition` at processing time `now`: the
    /// newest valid one counts, every invalid one (zero, too far ahead) is counted as ignored.
    pub fn observe_all(&mut self, partition: &K, times: impl IntoIterator<Item = EventTime>, now: EventTime) {
        let limit = now.saturating_add(self.config.max_future_skew);
        let mut newest = None;
        for t in times {
            if t == 0 || t > limit {
                self.ignored += 1;
            } else if newest.is_none_or(|n| t > n) {
                newest = Some(t);
            }
        }
        let mark = self.partitions.entry(partition.clone()).or_insert(PartitionMark {
            max_event_time: 0,
            last_seen_processing: now,
            waiting: false,
        });
        mark.last_seen_processing = now;
        mark.waiting = false;
        if let Some(t) = newest {
            mark.max_event_time = mark.max_event_time.max(t);
        }
    }

    /// Expects `partition` from processing time `now`: until it shows a record or stays silent
    /// for `idle_timeout`, the watermark does not advance, so its first records are not late
    /// because other partitions were read first. A partition already known is left as it is.
    pub fn register(&mut self, partition: &K, now: EventTime) {
        self.partitions.entry(partition.clone()).or_insert(PartitionMark {
            max_event_time: 0,
            last_seen_processing: now,
            waiting: true,
        });
    }

    /// `partition` has nothing to read now: if it is still waiting for its first record, it
    /// stops holding the watermark.
    pub fn release(&mut self, partition: &K) {
        if let Some(m) = self.partitions.get_mut(partition) {
            m.waiting = false;
        }
    }

    /// Forgets a partition (revoked from this worker).
    pub fn remove(&mut self, partition: &K) {
        self.partitions.remove(partition);
    }

    /// The watermark at processing time `now`; never decreases.
    pub fn watermark(&mut self, now: EventTime) -> EventTime {
        let idle_timeout = self.config.idle_timeout;
        if self
            .partitions
            .values()
            .any(|m| m.waiting && now.saturating_sub(m.last_seen_processing) < idle_timeout)
        {
            return self.current;
        }
        let active = self
            .partitions
            .values()
            .filter(|m| m.max_event_time > 0)
            .filter(|m| now.saturating_sub(m.last_seen_processing) < self.config.idle_timeout)
            .map(|m| m.max_event_time)
            .min();
        let candidate = match active {
            Some(min) => min.saturating_sub(self.config.allowed_lateness),
            // Every partition idle: event time goes on with the wall clock from the newest record,
            // so the last windows close even when nothing more arrives.
            None => {
                let newest = self.partitions.values().map(|m| m.max_event_time).max().unwrap_or(0);
                let last_seen = self
                    .partitions
                    .values()
                    .map(|m| m.last_seen_processing)
                    .max()
                    .unwrap_or(now);
                if newest == 0 {
                    0
                } else {
                    newest
                        .saturating_add(now.saturating_sub(last_seen))
                        .saturating_sub(self.config.allowed_lateness)
                }
            }
        };
        self.current = self.current.max(candidate);
        self.current
    }

    /// Event times that were ignored (zero or too far in the future).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn tracker() -> WatermarkTracker<u32> {
        WatermarkTracker::new(WatermarkConfig {
            allowed_lateness: 2 * S,
            idle_timeout: 10 * S,
            max_future_skew: 60 * S,
        })
    }

    #[test]
    fn a_registered_partition_holds_the_watermark_until_it_shows_data_or_goes_idle() {
        let mut t = tracker();
        t.register(&1, 100 * S);
        t.register(&2, 100 * S);
        t.observe(&1, 50 * S, 100 * S);
        assert_eq!(t.watermark(101 * S), 0, "partition 2 has shown nothing yet");
        t.observe(&2, 40 * S, 102 * S);
        assert_eq!(t.watermark(102 * S), 38 * S);
        // Registering a known partition changes nothing.
        t.register(&2, 103 * S);
        assert_eq!(t.watermark(103 * S), 38 * S);
        // One known to be empty is released at once.
        t.register(&4, 103 * S);
        t.observe(&2, 45 * S, 103 * S);
        assert_eq!(t.watermark(103 * S), 38 * S);
        t.release(&4);
        assert_eq!(t.watermark(103 * S), 43 * S);
        // A third that never shows up stops holding it after the idle timeout.
        t.register(&3, 104 * S);
        t.observe(&2, 60 * S, 105 * S);
        assert_eq!(t.watermark(105 * S), 43 * S);
        t.observe(&1, 70 * S, 113 * S);
        t.observe(&2, 70 * S, 113 * S);
        assert_eq!(t.watermark(114 * S), 68 * S);
    }

    #[test]
    fn minimum_over_partitions_minus_lateness() {
        let mut t = tracker();
        t.observe(&0, 100 * S, 100 * S);
        t.observe(&1, 90 * S, 100 * S);
        assert_eq!(t.watermark(100 * S), 88 * S);
        t.observe(&1, 120 * S, 101 * S);
        assert_eq!(t.watermark(101 * S), 98 * S);
    }

    #[test]
    fn idle_partition_stops_holding_back_and_watermark_never_decreases() {
        let mut t = tracker();
        t.observe(&0, 100 * S, 100 * S);
        t.observe(&1, 50 * S, 100 * S);
        assert_eq!(t.watermark(100 * S), 48 * S);
        t.observe(&0, 130 * S, 115 * S);
        // Partition 1 silent for 15 s > idle timeout.
        assert_eq!(t.watermark(115 * S), 128 * S);
        // It speaks again with an old time: the watermark holds, it does not go back.
        t.observe(&1, 60 * S, 116 * S);
        assert_eq!(t.watermark(116 * S), 128 * S);
    }

    #[test]
    fn when_every_partition_is_idle_event_time_follows_the_wall_clock() {
        let mut t = tracker();
        t.observe(&0, 100 * S, 1000 * S);
        assert_eq!(t.watermark(1005 * S), 98 * S);
        // 20 s of wall clock without input, past the 10 s idle timeout.
        assert_eq!(t.watermark(1020 * S), 118 * S);
    }

    #[test]
    fn far_future_and_zero_timestamps_are_ignored() {
        let mut t = tracker();
        t.observe(&0, 100 * S, 100 * S);
        t.observe(&0, 10_413_792_000 * S, 100 * S); // the year 2300
        t.observe(&0, 0, 100 * S);
        assert_eq!(t.watermark(100 * S), 98 * S);
        assert_eq!(t.ignored(), 2);
        // A batch: its valid times count even when an invalid one is the largest.
        t.observe_all(&1, [0, 101 * S, 10_413_792_000 * S, 99 * S], 100 * S);
        assert_eq!(t.ignored(), 4);
        assert_eq!(t.watermark(100 * S), 98 * S);
        t.observe_all(&0, [110 * S], 101 * S);
        assert_eq!(t.watermark(101 * S), 99 * S, "partition 1's newest valid time is 101 s");
    }
}
