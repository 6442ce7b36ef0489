//! The Avro schemas of the derived topics, and their single-object encoding.
//!
//! Each derived record is written in Avro's single-object encoding: the two bytes `C3 01`, the
//! schema's 8-byte CRC-64-AVRO (Rabin) fingerprint in little-endian order, then the Avro binary
//! datum. A consumer holding the `.avsc` files shipped in `schemas/avro/` looks the fingerprint
//! up and decodes with any Avro library.

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;

/// `dwcp.alerts`: alert state transitions.
pub const ALERT_SCHEMA: &str = include_str!("../avro/alert.avsc");
/// `dwcp.anomalies`: anomaly episodes.
pub const ANOMALY_SCHEMA: &str = include_str!("../avro/anomaly.avsc");
/// `dwcp.sla`: SLA reports.
pub const SLA_REPORT_SCHEMA: &str = include_str!("../avro/sla_report.avsc");
/// `dwcp.health`: region health changes.
pub const REGION_HEALTH_SCHEMA: &str = include_str!("../avro/region_health.avsc");

/// The derived record types, one per topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedKind {
    /// Alert transitions.
    Alert,
    /// Anomaly episodes.
    Anomaly,
    /// SLA reports.
    SlaReport,
    /// Region health.
    RegionHealth,
}

impl DerivedKind {
    /// All kinds.
    pub const ALL: [DerivedKind; 4] = [
        DerivedKind::Alert,
        DerivedKind::Anomaly,
        DerivedKind::SlaReport,
        DerivedKind::RegionHealth,
    ];

    /// The schema text (`.avsc`).
    pub fn schema_text(self) -> &'static str {
        match self {
            DerivedKind::Alert => ALERT_SCHEMA,
            DerivedKind::Anomaly => ANOMALY_SCHEMA,
            DerivedKind::SlaReport => SLA_REPORT_SCHEMA,
            DerivedKind::RegionHealth => REGION_HEALTH_SCHEMA,
        }
    }

    /// The default topic.
    pub fn default_topic(self) -> &'static str {
        match self {
            DerivedKind::Alert => "dwcp.alerts",
            DerivedKind::Anomaly => "dwcp.anomalies",
            DerivedKind::SlaReport => "dwcp.sla",
            DerivedKind::RegionHealth => "dwcp.health",
        }
    }
}

/// Errors of the Avro codec.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The schema or a value did not fit.
    #[error("avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
    /// Not single-object encoded, or for another schema.
    #[error("not a single-object encoded record of schema {expected}: {reason}")]
    Header {
        /// The expected schema's full name.
        expected: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<apache_avro::Error> for AvroError {
    fn from(e: apache_avro::Error) -> Self {
        AvroError::Avro(Box::new(e))
    }
}

/// Encodes and decodes single-object records of one schema.
#[derive(Debug, Clone)]
pub struct SingleObjectCodec {
    schema: Schema,
    header: [u8; 10],
}

impl SingleObjectCodec {
    /// A codec for the schema of `kind`.
    ///
    /// # Errors
    /// Only if a shipped schema fails to parse, which the tests rule out.
    pub fn for_kind(kind: DerivedKind) -> Result<Self, AvroError> {
        Self::new(Schema::parse_str(kind.schema_text())?)
    }

    /// A codec for any schema.
    ///
    /// # Errors
    /// Never today; kept fallible for schemas that cannot be fingerprinted.
    pub fn new(schema: Schema) -> Result<Self, AvroError> {
        let fp = schema.fingerprint::<Rabin>();
        let mut header = [0u8; 10];
        header[0] = 0xC3;
        header[1] = 0x01;
        header[2..].copy_from_slice(&fp.bytes[..8]);
        Ok(SingleObjectCodec { schema, header })
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The 8-byte fingerprint as it appears in the header.
    pub fn fingerprint(&self) -> [u8; 8] {
        let mut f = [0u8; 8];
        f.copy_from_slice(&self.header[2..]);
        f
    }

    /// Encodes a value (validated against the schema).
    ///
    /// # Errors
    /// When the value does not match the schema.
    pub fn encode(&self, value: Value) -> Result<Vec<u8>, AvroError> {
        let datum = apache_avro::to_avro_datum(&self.schema, value)?;
        let mut out = Vec::with_capacity(self.header.len() + datum.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// Encodes any serde value whose shape matches the schema.
    ///
    /// # Errors
    /// When the value does not match the schema.
    pub fn encode_serde<T: serde::Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let v = apache_avro::to_value(value)?.resolve(&self.schema)?;
        self.encode(v)
    }

    /// Decodes one single-object record.
    ///
    /// # Errors
    /// When the header is missing or for another schema, or the datum is invalid.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, AvroError> {
        let header_err = |reason: &str| AvroError::Header {
            expected: match &self.schema {
                Schema::Record(r) => r.name.fullname(None),
                _ => "?".into(),
            },
            reason: reason.into(),
        };
        if bytes.len() < 10 || bytes[0] != 0xC3 || bytes[1] != 0x01 {
            return Err(header_err("missing the C3 01 marker"));
        }
        if bytes[2..10] != self.header[2..] {
            return Err(header_err("fingerprint differs"));
        }
        let mut rest = &bytes[10..];
        Ok(apache_avro::from_avro_datum(&self.schema, &mut rest, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_shipped_schema_parses() {
        for kind in DerivedKind::ALL {
            SingleObjectCodec::for_kind(kind).expect("schema parses");
        }
    }

    #[test]
    fn alert_round_trips_with_rabin_header() {
        let codec = SingleObjectCodec::for_kind(DerivedKind::Alert).expect("schema");
        let labels: HashMap<String, Value> = [("alertname".to_string(), Value::String("HighLatency".into()))]
            .into_iter()
            .collect();
        let rec = Value::Record(vec![
            ("fingerprint".into(), Value::String("0123456789abcdef".into())),
            ("alertname".into(), Value::String("HighLatency".into())),
            ("state".into(), Value::Enum(2, "firing".into())),
            ("labels".into(), Value::Map(labels)),
            ("annotations".into(), Value::Map(HashMap::new())),
            ("value".into(), Value::Double(142.5)),
            (
                "active_since".into(),
                Value::Union(1, Box::new(Value::TimestampMillis(1_000))),
            ),
            ("event_time".into(), Value::TimestampMillis(301_000)),
            ("group".into(), Value::String("dwcp".into())),
            ("expr".into(), Value::String("up == 0".into())),
        ]);
        let bytes = codec.encode(rec.clone()).expect("encode");
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        // The header fingerprint is the schema's CRC-64-AVRO, as apache-avro's own writer puts it.
        let mut reference = Vec::new();
        apache_avro::GenericSingleObjectWriter::new_with_capacity(codec.schema(), 64)
            .expect("writer")
            .write_value(rec.clone(), &mut reference)
            .expect("write");
        assert_eq!(bytes, reference);
        assert_eq!(codec.decode(&bytes).expect("decode"), rec);
        assert!(codec.decode(&bytes[..5]).is_err());
    }
}
