//! The remote-write 1.0 wire format: protobuf `WriteRequest`, snappy block format.

use dwcp_operators::prom::{put_varint as varint, FastMap, Label, Sample};

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

/// Samples grouped by series, in order of each series' first appearance: its labels and the
/// range of its `(timestamp, value)` samples in `points`, sorted by timestamp (stably, so the
/// later-arrived of two equal timestamps stays last).
struct Grouped<'a> {
    series: Vec<(&'a [Label], std::ops::Range<usize>)>,
    points: Vec<(i64, f64)>,
}

impl Grouped<'_> {
    fn iter(&self) -> impl Iterator<Item = (&[Label], &[(i64, f64)])> {
        self.series.iter().map(|(l, r)| (*l, &self.points[r.clone()]))
    }
}

/// Label sets alike: the same allocation (a series' samples share one), or the same labels.
fn same_set(a: &std::sync::Arc<[Label]>, b: &std::sync::Arc<[Label]>) -> bool {
    std::sync::Arc::ptr_eq(a, b) || a == b
}

/// Groups `samples` by series with a few flat vectors: a map from the series hash (a label set
/// sharing the hash of another is looked up among the collided ones), then a counting sort.
fn group<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Grouped<'a> {
    let samples = samples.into_iter();
    let n = samples.size_hint().0;
    let mut index: FastMap<u64, usize> = FastMap::with_capacity_and_hasher(n, Default::default());
    let mut collided: Vec<usize> = Vec::new();
    // Label sets compare by pointer first: the samples of one series share theirs.
    let mut labels: Vec<&'a std::sync::Arc<[Label]>> = Vec::with_capacity(n);
    let mut arrived: Vec<(usize, i64, f64)> = Vec::with_capacity(n);
    for s in samples {
        let l = &s.labels;
        let h = s.series_hash();
        let i = match index.get(&h).copied() {
            Some(i) if same_set(labels[i], l) => i,
            Some(_) => match collided.iter().copied().find(|&i| same_set(labels[i], l)) {
                Some(i) => i,
                None => {
                    labels.push(l);
                    collided.push(labels.len() - 1);
                    labels.len() - 1
                }
            },
            None => {
                labels.push(l);
                index.insert(h, labels.len() - 1);
                labels.len() - 1
            }
        };
        arrived.push((i, s.timestamp_ms, s.value));
    }
    // starts[i]..starts[i + 1] is series i's range.
    let mut starts = vec![0usize; labels.len() + 1];
    for (i, ..) in &arrived {
        starts[i + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut points = vec![(0i64, 0f64); arrived.len()];
    let mut next = starts.clone();
    for (i, t, v) in arrived {
        points[next[i]] = (t, v);
        next[i] += 1;
    }
    let series = labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let r = starts[i]..starts[i + 1];
            points[r.clone()].sort_by_key(|(t, _)| *t);
            (&l[..], r)
        })
        .collect();
    Grouped { series, points }
}

/// Builds the `WriteRequest` for `samples` as prost messages (the reference for [`encode`]):
/// one series per label set, labels sorted with empty names and values removed, samples of
/// each series in timestamp order.
pub fn write_request<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> proto::WriteRequest {
    let grouped = group(samples);
    let timeseries = grouped
        .iter()
        .map(|(labels, samples)| {
            let mut labels: Vec<proto::Label> = labels
                .iter()
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .map(|(k, v)| proto::Label {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect();
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            proto::TimeSeries {
                labels,
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| proto::Sample { value, timestamp })
                    .collect(),
            }
        })
        .collect();
    proto::WriteRequest { timeseries }
}

/// `a <= b`, deciding on the first byte when it differs (it mostly does between the label
/// names of one set) instead of calling out to `memcmp`.
#[inline]
fn name_le(a: &str, b: &str) -> bool {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x < y,
        _ => a <= b,
    }
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn bytes_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// The uncompressed protobuf of the `WriteRequest`, written straight from the samples' labels
/// without building intermediate messages (the same bytes prost gives for [`write_request`]).
pub fn encode_uncompressed<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<u8> {
    let grouped = group(samples);
    let mut out = Vec::with_capacity(grouped.series.len() * 128);
    let mut sorted: Vec<&Label> = Vec::new();
    for (labels, samples) in grouped.iter() {
        sorted.clear();
        sorted.extend(labels.iter().filter(|(k, v)| !k.is_empty() && !v.is_empty()));
        if !sorted.is_sorted_by(|a, b| name_le(&a.0, &b.0)) {
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let label_len = |(k, v): &&Label| bytes_field_len(k.len()) + bytes_field_len(v.len());
        #[allow(clippy::cast_sign_loss)]
        let sample_len = |(t, _): &(i64, f64)| 9 + 1 + varint_len(*t as u64);
        let ts_len: usize = sorted.iter().map(|l| bytes_field_len(label_len(l))).sum::<usize>()
            + samples.iter().map(|s| bytes_field_len(sample_len(s))).sum::<usize>();
        out.push(0x0a); // WriteRequest.timeseries = 1, length-delimited
        varint(ts_len as u64, &mut out);
        for l in &sorted {
            out.push(0x0a); // TimeSeries.labels = 1
            varint(label_len(l) as u64, &mut out);
            out.push(0x0a); // Label.name = 1
            varint(l.0.len() as u64, &mut out);
            out.extend_from_slice(l.0.as_bytes());
            out.push(0x12); // Label.value = 2
            varint(l.1.len() as u64, &mut out);
            out.extend_from_slice(l.1.as_bytes());
        }
        for s in samples {
            out.push(0x12); // TimeSeries.samples = 2
            varint(sample_len(s) as u64, &mut out);
            out.push(0x09); // Sample.value = 1, 64-bit
            out.extend_from_slice(&s.1.to_le_bytes());
            out.push(0x10); // Sample.timestamp = 2, varint
            #[allow(clippy::cast_sign_loss)]
            varint(s.0 as u64, &mut out);
        }
    }
    out
}

/// The compressed request body for `samples`.
///
/// # Errors
/// Only if snappy fails, which it does not for in-memory input of this size.
pub fn encode<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&encode_uncompressed(samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwcp_operators::prom::labels_of;
    use prost::Message as _;

    #[test]
    fn hand_written_protobuf_decodes_to_the_reference_message() {
        let samples = vec![
            Sample::new(
                labels_of([("__name__", "b"), ("region", "eu"), ("empty", "")]),
                2.5,
                3000,
            ),
            Sample::new(
                labels_of([("__name__", "b"), ("region", "eu"), ("empty", "")]),
                0.0,
                1000,
            ),
            Sample::new(
                labels_of([("__name__", "a"), ("x", "y".repeat(300).as_str())]),
                f64::NAN,
                -5,
            ),
            Sample::new(labels_of([("__name__", "c")]), -1e300, i64::MAX),
        ];
        let bytes = encode_uncompressed(&samples);
        let decoded = proto::WriteRequest::decode(bytes.as_slice()).expect("valid protobuf");
        let reference = write_request(&samples);
        assert_eq!(decoded.timeseries.len(), 3);
        for (d, r) in decoded.timeseries.iter().zip(&reference.timeseries) {
            assert_eq!(d.labels, r.labels);
            let dv: Vec<(i64, u64)> = d.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
            let rv: Vec<(i64, u64)> = r.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
            assert_eq!(dv, rv);
        }
        assert_eq!(decoded.timeseries[0].samples[0].timestamp, 1000, "sorted by time");
    }
}
