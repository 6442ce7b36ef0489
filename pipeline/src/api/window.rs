//! The monitoring API's in-memory window: every sample the worker writes to remote-write (raw,
//! aggregated, derived, recorded, anomaly scores), kept for `api.retention_ms` of event time,
//! for PromQL over `/api/v1/query` and `/api/v1/query_range`.
//!
//! The router appends under a write lock once per batch; queries evaluate under the read lock on
//! a blocking thread. A long query delays the router's next append (backpressure, not loss).

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use dwcp_operators::prom::Sample;
use dwcp_operators::rules::SeriesStore;

/// Samples by series, trimmed to a retention.
#[derive(Debug)]
pub struct MetricsWindow {
    store: RwLock<SeriesStore>,
    retention_ms: i64,
}

/// Counters of what the window did not keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Series held.
    pub series: usize,
    /// Samples older than their series' newest.
    pub out_of_order: u64,
    /// Samples of new series past the limit.
    pub dropped_series: u64,
}

impl MetricsWindow {
    /// A window of `retention_ms` holding at most `max_series` series.
    pub fn new(retention_ms: u64, max_series: usize) -> Self {
        MetricsWindow {
            store: RwLock::new(SeriesStore::new(max_series)),
            retention_ms: i64::try_from(retention_ms).unwrap_or(i64::MAX),
        }
    }

    /// Appends samples (each series' samples in time order, as remote-write gets them).
    pub fn append(&self, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        let mut store = self.store.write().unwrap_or_else(PoisonError::into_inner);
        for s in samples {
            store.append(s);
        }
    }

    /// Drops what is older than the retention before `now_ms` (event time).
    pub fn trim(&self, now_ms: i64) {
        let min = now_ms.saturating_sub(self.retention_ms);
        self.store.write().unwrap_or_else(PoisonError::into_inner).trim(min);
    }

    /// The store, for reading.
    pub fn read(&self) -> RwLockReadGuard<'_, SeriesStore> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// What it holds and dropped.
    pub fn stats(&self) -> WindowStats {
        let s = self.read();
        WindowStats {
            series: s.len(),
            out_of_order: s.out_of_order,
            dropped_series: s.dropped_series,
        }
    }
}
