//! Network telemetry per region pair: bandwidth and utilization, latency with RFC 3550
//! interarrival jitter, packet loss, and VPN tunnel status with flap counts.
//!
//! - Jitter (RFC 3550 §6.4.1): for consecutive probes i−1, i with transit times
//!   `T = receive − send`, `D = T(i) − T(i−1)` and `J += (|D| − J) / 16`.
//! - Loss: `1 − received / sent` over the probes of the pair.
//! - Bandwidth: bytes sent and received between two observations, per second; utilization is the
//!   larger direction over the pair's capacity.
//! - Tunnel status: `up`, `degraded` (up with loss above `degraded_loss` or latency above
//!   `degraded_latency_ms`) or `down`; a flap is a change between up/degraded and down.
//!   Exported as `dwcp_tunnel_status` with 1 up, 0.5 degraded, 0 down.

use serde::{Deserialize, Serialize};

use crate::EventTime;

/// Tunnel state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelStatus {
    /// Passing traffic normally.
    Up,
    /// Up, but lossy or slow.
    Degraded,
    /// Not passing traffic.
    Down,
}

impl TunnelStatus {
    /// The value of `dwcp_tunnel_status`.
    pub fn gauge(self) -> f64 {
        match self {
            TunnelStatus::Up => 1.0,
            TunnelStatus::Degraded => 0.5,
            TunnelStatus::Down => 0.0,
        }
    }
}

/// Thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Loss share above which an up tunnel is degraded.
    pub degraded_loss: f64,
    /// Latency above which an up tunnel is degraded, ms.
    pub degraded_latency_ms: f64,
    /// Link capacity, bytes per second (0: unknown, utilization not computed).
    pub capacity_bytes_per_second: f64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            degraded_loss: 0.01,
            degraded_latency_ms: 250.0,
            capacity_bytes_per_second: 0.0,
        }
    }
}

/// The telemetry of one region pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairTelemetry {
    config: NetworkConfig,
    last_transit_ns: Option<i64>,
    /// RFC 3550 jitter, ns.
    jitter_ns: f64,
    /// Latest one-way latency, ns.
    latency_ns: i64,
    sent: u64,
    received: u64,
    /// Loss between the last two packet-counter observations, when counters are used.
    counter_loss: Option<f64>,
    /// Last (packets sent, packets received) counters.
    packets: Option<(f64, f64)>,
    /// Last (time, cumulative bytes) per direction: sent, received.
    byte_counters: [Option<(EventTime, f64)>; 2],
    rates: (f64, f64),
    status: TunnelStatus,
    flaps: u64,
}

/// A snapshot for export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Latest latency, ms.
    pub latency_ms: f64,
    /// Loss share.
    pub loss: f64,
    /// Bytes per second sent.
    pub sent_bytes_per_second: f64,
    /// Bytes per second received.
    pub received_bytes_per_second: f64,
    /// Larger direction over capacity, if capacity is known.
    pub utilization: Option<f64>,
    /// Tunnel status.
    pub status: TunnelStatus,
    /// Up/down changes so far.
    pub flaps: u64,
}

impl PairTelemetry {
    /// A pair.
    pub fn new(config: NetworkConfig) -> Self {
        PairTelemetry {
            config,
            last_transit_ns: None,
            jitter_ns: 0.0,
            latency_ns: 0,
            sent: 0,
            received: 0,
            counter_loss: None,
            packets: None,
            byte_counters: [None, None],
            rates: (0.0, 0.0),
            status: TunnelStatus::Up,
            flaps: 0,
        }
    }

    /// A probe: sent at `send`, received at `receive` (`None`: lost).
    #[allow(clippy::cast_possible_wrap, clippy::cast_precision_loss)]
    pub fn probe(&mut self, send: EventTime, receive: Option<EventTime>) {
        self.sent += 1;
        let Some(r) = receive else { return };
        self.received += 1;
        let transit = r as i64 - send as i64;
        if let Some(prev) = self.last_transit_ns {
            let d = (transit - prev).abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit_ns = Some(transit);
        self.latency_ns = transit;
    }

    /// A measured one-way or round-trip latency (a probe whose transit time is known, as a
    /// latency gauge reports it): feeds the jitter like a received probe.
    #[allow(clippy::cast_possible_truncation)]
    pub fn transit(&mut self, latency_ns: f64) {
        if !latency_ns.is_finite() || latency_ns < 0.0 {
            return;
        }
        let transit = latency_ns as i64;
        if let Some(prev) = self.last_transit_ns {
            #[allow(clippy::cast_precision_loss)]
            let d = (transit - prev).abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit_ns = Some(transit);
        self.latency_ns = transit;
    }

    /// Packet counters (cumulative): the loss becomes `1 − Δreceived / Δsent` between the last
    /// two observations; a counter that went down was reset and restarts the count.
    pub fn packets(&mut self, sent: f64, received: f64) {
        if let Some((ps, pr)) = self.packets {
            let ds = if sent >= ps { sent - ps } else { sent };
            let dr = if received >= pr { received - pr } else { received };
            if ds > 0.0 {
                self.counter_loss = Some((1.0 - dr / ds).clamp(0.0, 1.0));
            }
        }
        self.packets = Some((sent, received));
    }

    /// Byte counters (cumulative, as interfaces report them) at event time `t`.
    pub fn bytes(&mut self, t: EventTime, sent: u64, received: u64) {
        #[allow(clippy::cast_precision_loss)]
        {
            self.byte_counter(t, 0, sent as f64);
            self.byte_counter(t, 1, received as f64);
        }
    }

    /// One direction's byte counter (0 sent, 1 received) at event time `t`.
    #[allow(clippy::cast_precision_loss)]
    pub fn byte_counter(&mut self, t: EventTime, direction: usize, total: f64) {
        let Some(slot) = self.byte_counters.get_mut(direction) else {
            return;
        };
        if let Some((pt, pv)) = *slot {
            if t > pt {
                let secs = (t - pt) as f64 / 1e9;
                // A counter that went down was reset: count from zero.
                let d = if total >= pv { total - pv } else { total };
                if direction == 0 {
                    self.rates.0 = d / secs;
                } else {
                    self.rates.1 = d / secs;
                }
            } else if t < pt {
                return;
            }
        }
        *slot = Some((t, total));
    }

    /// The tunnel reported up or down; `degraded` is derived from loss and latency.
    pub fn tunnel(&mut self, up: bool) {
        let next = if !up {
            TunnelStatus::Down
        } else if self.loss() > self.config.degraded_loss || self.latency_ms() > self.config.degraded_latency_ms {
            TunnelStatus::Degraded
        } else {
            TunnelStatus::Up
        };
        if (next == TunnelStatus::Down) != (self.status == TunnelStatus::Down) {
            self.flaps += 1;
        }
        self.status = next;
    }

    #[allow(clippy::cast_precision_loss)]
    fn loss(&self) -> f64 {
        if let Some(l) = self.counter_loss {
            l
        } else if self.sent == 0 {
            0.0
        } else {
            1.0 - self.received as f64 / self.sent as f64
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn latency_ms(&self) -> f64 {
        self.latency_ns as f64 / 1e6
    }

    /// The current figures.
    pub fn report(&self) -> PairReport {
        let cap = self.config.capacity_bytes_per_second;
        PairReport {
            jitter_ms: self.jitter_ns / 1e6,
            latency_ms: self.latency_ms(),
            loss: self.loss(),
            sent_bytes_per_second: self.rates.0,
            received_bytes_per_second: self.rates.1,
            utilization: (cap > 0.0).then(|| self.rates.0.max(self.rates.1) / cap),
            status: self.status,
            flaps: self.flaps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn rfc3550_jitter_on_a_hand_computed_sequence() {
        let mut p = PairTelemetry::new(NetworkConfig::default());
        // Transit times 20, 30, 20, 40 ms: |D| = 10, 10, 20.
        for (i, transit) in [20u64, 30, 20, 40].iter().enumerate() {
            let send = i as u64 * 100 * MS;
            p.probe(send, Some(send + transit * MS));
        }
        // J1 = 10/16 = 0.625; J2 = 0.625 + (10 − 0.625)/16 = 1.2109375;
        // J3 = 1.2109375 + (20 − 1.2109375)/16 = 2.385253906.
        let j = p.report().jitter_ms;
        assert!((j - 2.385_253_906_25).abs() < 1e-9, "{j}");
        assert_eq!(p.report().latency_ms, 40.0);
    }

    #[test]
    fn loss_bandwidth_and_tunnel_flaps() {
        let mut p = PairTelemetry::new(NetworkConfig {
            capacity_bytes_per_second: 1e9,
            ..Default::default()
        });
        for i in 0..100u64 {
            p.probe(i * MS, (i % 20 != 0).then_some(i * MS + 30 * MS));
        }
        assert!((p.report().loss - 0.05).abs() < 1e-12);
        p.bytes(0, 0, 0);
        p.bytes(10 * 1000 * MS, 2_500_000_000, 500_000_000);
        let r = p.report();
        assert_eq!(r.sent_bytes_per_second, 250_000_000.0);
        assert_eq!(r.utilization, Some(0.25));
        // 5 % loss > 1 %: up means degraded. Down, up, down: three flaps.
        p.tunnel(true);
        assert_eq!(p.report().status, TunnelStatus::Degraded);
        p.tunnel(false);
        p.tunnel(true);
        p.tunnel(false);
        let r = p.report();
        assert_eq!(r.status, TunnelStatus::Down);
        assert_eq!(r.flaps, 3);
        assert_eq!(r.status.gauge(), 0.0);
    }
}
