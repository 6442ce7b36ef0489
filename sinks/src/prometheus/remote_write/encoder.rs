//! The remote-write 1.0 wire format: protobuf `WriteRequest`, snappy block format.

use std::collections::HashMap;

use dwcp_operators::prom::Sample;
use prost::Message as _;

/// The protobuf messages of `prompb` that remote-write 1.0 uses.
pub mod proto {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `prometheus.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted labels.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Samples in timestamp order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// Builds the `WriteRequest` for `samples`: one series per label set, labels sorted with empty
/// names and values removed, samples of each series in timestamp order (stable for equal
/// timestamps, so the later-arrived sample of a duplicate is last).
pub fn write_request<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> proto::WriteRequest {
    let mut index: HashMap<&[(String, String)], usize> = HashMap::new();
    let mut series: Vec<proto::TimeSeries> = Vec::new();
    for s in samples {
        let i = *index.entry(s.labels.as_slice()).or_insert_with(|| {
            let mut labels: Vec<proto::Label> = s
                .labels
                .iter()
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .map(|(k, v)| proto::Label {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect();
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            series.push(proto::TimeSeries {
                labels,
                samples: Vec::new(),
            });
            series.len() - 1
        });
        series[i].samples.push(proto::Sample {
            value: s.value,
            timestamp: s.timestamp_ms,
        });
    }
    for ts in &mut series {
        ts.samples.sort_by_key(|s| s.timestamp);
    }
    proto::WriteRequest { timeseries: series }
}

/// The compressed request body for `samples`.
///
/// # Errors
/// Only if snappy fails, which it does not for in-memory input of this size.
pub fn encode<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Result<Vec<u8>, snap::Error> {
    let raw = write_request(samples).encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw)
}
