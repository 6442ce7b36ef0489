//! The worker's configuration: parse, validate, build.
//!
//! YAML, every section optional; unknown keys are errors. Environment variables override
//! single fields: `DWCP__SOURCE__BROKERS=host:9092` sets `source.brokers` (path segments joined
//! by a double underscore, case-insensitive; the value is read as YAML, so `DWCP__HTTP__LISTEN`
//! takes a string and `DWCP__SOURCE__COMMIT_INTERVAL_MS=500` a number).
//!
//! Errors name the file, the field path, the line and column, and what was expected, on one line:
//! `pipeline.yaml: source.topics[0].encoding at line 6 column 15: unknown variant ...`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dwcp_operators::aggregate::AggregationConfig;
use dwcp_operators::cardinality::CardinalityConfig;
use dwcp_operators::derived::{CapacitySpec, DerivedConfig, DerivedOperator, HealthSpec, NetworkSpec, SlaSpec};
use dwcp_operators::prom::PromConfig;
use dwcp_operators::spanmetrics::SpanMetricsConfig;
use dwcp_operators::traces::{Policy, TraceConfig};
use dwcp_schemas::{Encoding, Signal};
use dwcp_sinks::alertmanager::AlertmanagerConfig;
use dwcp_sinks::elasticsearch::EsConfig;
use dwcp_sinks::file::FileSinkConfig;
use dwcp_sinks::prometheus::remote_write::RemoteWriteConfig;
use serde::{Deserialize, Serialize};

/// Errors of loading a configuration: each names the file and, where it applies, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid YAML, or a field of the wrong type or name.
    #[error("{file}: {path}{location}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The field path, `source.topics[0].encoding`; empty at the top.
        path: String,
        /// ` at line L column C`, when known.
        location: String,
        /// What was wrong.
        message: String,
    },
    /// Parsed but inconsistent.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The field.
        field: String,
        /// What was wrong.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where OTLP comes from.
    pub source: SourceConfig,
    /// Where undecodable messages go.
    pub dead_letter: DeadLetterConfig,
    /// The HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Operator settings.
    pub operators: OperatorsConfig,
    /// Destinations.
    pub sinks: SinksConfig,
    /// Derived streams published back to Kafka as Avro.
    pub derived_topics: DerivedTopicsConfig,
    /// Prometheus alerting and recording rules.
    pub rules: RulesConfig,
    /// The monitoring API on the HTTP port.
    pub api: ApiConfig,
    /// Re-keying into internal topics, for several workers in one group.
    pub repartition: RepartitionConfig,
}

/// Re-keying into internal topics so that several workers can share the keyed operators: a
/// first stage decodes the input and writes each metric point to `series_topic` by its series
/// key and each span to `spans_topic` by its trace id; the operators read those topics. Off: one
/// worker, records flow in process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepartitionConfig {
    /// Run the two stages.
    pub enabled: bool,
    /// Metric points, keyed by series key.
    pub series_topic: String,
    /// Spans, keyed by trace id.
    pub spans_topic: String,
    /// Partitions of the internal topics when this worker creates them (an existing topic keeps
    /// its own count).
    pub partitions: i32,
    /// Replication factor of the internal topics when this worker creates them.
    pub replication_factor: i32,
    /// Keep keyed operator state in compacted changelog topics `<prefix><operator>`, so it
    /// moves with its partitions (today: the anomaly detectors' baselines).
    pub changelog: bool,
    /// Prefix of the changelog topics.
    pub changelog_prefix: String,
}

impl Default for RepartitionConfig {
    fn default() -> Self {
        RepartitionConfig {
            enabled: false,
            series_topic: "dwcp.internal.series".into(),
            spans_topic: "dwcp.internal.spans".into(),
            partitions: 12,
            replication_factor: 1,
            changelog: true,
            changelog_prefix: "dwcp.state.".into(),
        }
    }
}

/// A secret from the configuration: shown as `***` in debug output, so it is never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The monitoring API (`/api/v1/...`, `/openapi.json`) on `http.listen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Keep a PromQL window of the samples the worker writes (else the query endpoints answer 503).
    pub enabled: bool,
    /// How much event time the window keeps, ms. Memory: about 16 bytes per sample plus the labels
    /// per series.
    pub retention_ms: u64,
    /// Series in the window at most; samples of further series are dropped and counted.
    pub max_series: usize,
    /// API keys; none: the API is open.
    pub keys: Vec<ApiKeyConfig>,
    /// SQL over recent rollups, alerts, anomalies, SLA and health records.
    pub sql: SqlConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            retention_ms: 3_600_000,
            max_series: 100_000,
            keys: Vec::new(),
            sql: SqlConfig::default(),
        }
    }
}

/// `POST /api/v1/sql` over in-memory history (Arrow record batches, DataFusion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Keep the history and answer SQL.
    pub enabled: bool,
    /// How much event time each table keeps, ms.
    pub retention_ms: u64,
    /// Rows per table at most; the oldest are dropped and counted past it.
    pub max_rows: usize,
    /// Rows a query answers at most (the answer says `truncated`).
    pub max_result_rows: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            enabled: true,
            retention_ms: 86_400_000,
            max_rows: 10_000_000,
            max_result_rows: 10_000,
        }
    }
}

/// One API key: the secret inline (`key`) or from an environment variable (`key_env`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for messages and logs.
    pub name: String,
    /// The secret.
    #[serde(default)]
    pub key: Option<Secret>,
    /// The environment variable holding the secret.
    #[serde(default)]
    pub key_env: Option<String>,
    /// `metrics`, `traces` (traces and logs), `admin` (everything).
    pub scopes: Vec<crate::api::Scope>,
}

/// Grafana: annotations for alerts and anomalies, and the dashboards at startup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaSinkConfig {
    /// Grafana's base URL, `http://grafana:3000`.
    pub url: String,
    /// A service-account token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Post alert and anomaly annotations.
    #[serde(default = "yes")]
    pub annotations: bool,
    /// Push the generated dashboards when the worker starts.
    #[serde(default)]
    pub push_dashboards: bool,
    /// The folder dashboards go into (created when missing); none: General.
    #[serde(default)]
    pub folder_uid: Option<String>,
    /// Request timeout, ms.
    #[serde(default = "grafana_timeout")]
    pub timeout_ms: u64,
}

fn yes() -> bool {
    true
}

fn grafana_timeout() -> u64 {
    10_000
}

/// Reads a secret given inline or by environment variable; `field` names both in errors.
fn secret(
    inline: Option<&Secret>,
    env: Option<&str>,
    field: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(format!("{field}: give either the secret or {field}_env, not both")),
        (Some(s), None) if s.0.is_empty() => Err(format!("{field}: must not be empty")),
        (Some(s), None) => Ok(Some(s.0.clone())),
        (None, Some(var)) => match vars(var) {
            Some(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(format!("{field}_env: environment variable {var} is not set")),
        },
        (None, None) => Ok(None),
    }
}

/// Prometheus rule files evaluated on event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files (relative paths are relative to the config file).
    pub files: Vec<PathBuf>,
    /// Interval of groups without one, ms.
    pub default_interval_ms: u64,
    /// Series kept for evaluation at most; samples of further series are dropped and counted.
    pub max_series: usize,
    /// Window semantics of this Prometheus major version: 3 (range selectors exclude their left
    /// end, the default) or 2 (include it, as Prometheus 2.x evaluates).
    pub prometheus_version: u8,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            files: Vec::new(),
            default_interval_ms: 60_000,
            max_series: 1_000_000,
            prometheus_version: 3,
        }
    }
}

/// The Kafka topics of derived records (Avro, single-object encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DerivedTopicsConfig {
    /// Publish at all.
    pub enabled: bool,
    /// Brokers; default: the source's.
    pub brokers: Option<String>,
    /// SLA reports.
    pub sla: String,
    /// Region health changes.
    pub health: String,
    /// Alert state changes.
    pub alerts: String,
    /// Anomaly episodes.
    pub anomalies: String,
    /// Extra librdkafka producer settings.
    pub producer_options: BTreeMap<String, String>,
    /// `at_least_once`: records keyed deterministically, a restart may repeat some;
    /// `exactly_once`: in Kafka transactions with the state checkpoints and the consumed
    /// offsets (needs a broker with transactions, repartitioning and the changelog).
    pub delivery: Delivery,
    /// The transactional producer's `transactional.id` with `exactly_once`: unique per worker
    /// and the same across its restarts (a restarted worker aborts what it left open). Default:
    /// `<source.group_id>-<host name>`.
    pub transactional_id: Option<String>,
}

/// How derived records are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Each record at least once, with a deterministic key to deduplicate on.
    #[default]
    AtLeastOnce,
    /// Each record once, visible to `read_committed` consumers when its checkpoint commits.
    ExactlyOnce,
}

impl Default for DerivedTopicsConfig {
    fn default() -> Self {
        DerivedTopicsConfig {
            enabled: true,
            brokers: None,
            sla: "dwcp.sla".into(),
            health: "dwcp.health".into(),
            alerts: "dwcp.alerts".into(),
            anomalies: "dwcp.anomalies".into(),
            producer_options: BTreeMap::new(),
            delivery: Delivery::AtLeastOnce,
            transactional_id: None,
        }
    }
}

/// The Kafka source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group id; workers with the same id share the partitions.
    pub group_id: String,
    /// Topics to read, each with its signal and encoding.
    pub topics: Vec<TopicConfig>,
    /// The Kafka header that carries a region when neither the resource nor the topic has one.
    pub region_header: String,
    /// How often acknowledged offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// Messages in flight between the source and the operators; when full, consumption pauses.
    pub queue_capacity: usize,
    /// Where to start in a partition with no committed offset: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Extra librdkafka consumer properties (`security.protocol`, `sasl.*`, `fetch.max.bytes`, ...).
    pub consumer_options: BTreeMap<String, String>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "dwcp-monitor".into(),
            topics: vec![
                TopicConfig::named("otlp_metrics", Signal::Metrics),
                TopicConfig::named("otlp_spans", Signal::Traces),
                TopicConfig::named("otlp_logs", Signal::Logs),
            ],
            region_header: "cloud.region".into(),
            commit_interval_ms: 1000,
            queue_capacity: 1024,
            auto_offset_reset: "earliest".into(),
            consumer_options: BTreeMap::new(),
        }
    }
}

/// One topic (or, when the name starts with `^`, every topic matching the regex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name, or a regex starting with `^` as the Collector's kafka receiver allows.
    pub name: String,
    /// Which signal the messages hold.
    pub signal: Signal,
    /// `otlp_proto` (default) or `otlp_json`.
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    /// The region of records whose resource has no `cloud.region`.
    #[serde(default)]
    pub region: Option<String>,
}

fn default_encoding() -> Encoding {
    Encoding::OtlpProto
}

impl TopicConfig {
    fn named(name: &str, signal: Signal) -> Self {
        TopicConfig {
            name: name.into(),
            signal,
            encoding: Encoding::OtlpProto,
            region: None,
        }
    }

    /// Whether `name` is a regex subscription.
    pub fn is_pattern(&self) -> bool {
        self.name.starts_with('^')
    }
}

/// The dead-letter topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Send undecodable messages there (else they are only counted and logged).
    pub enabled: bool,
    /// The topic.
    pub topic: String,
    /// Largest message the dead-letter producer sends, bytes.
    pub max_message_bytes: usize,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            enabled: true,
            topic: "dwcp.dlq".into(),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8686".into(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `dwcp_pipeline=debug,info`, ... (`RUST_LOG` wins when set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Operator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// Allowed lateness of event time behind the newest record, ms.
    pub allowed_lateness_ms: u64,
    /// A partition silent this long no longer holds the watermark back, ms.
    pub idle_timeout_ms: u64,
    /// Event times further ahead of the wall clock than this do not move the watermark, ms.
    pub max_future_skew_ms: u64,
    /// Region activity windows, ms.
    pub activity_window_ms: u64,
    /// A region silent this long is reported dark, ms.
    pub dark_after_ms: u64,
    /// Regions tracked at most; further ones are counted as `other`.
    pub max_regions: usize,
    /// OTLP to Prometheus conversion.
    pub prometheus: PromConfig,
    /// Active series bounds.
    pub cardinality: CardinalityConfig,
    /// Cross-region aggregation windows and rules.
    pub aggregation: AggregationConfig,
    /// Trace stitching and tail sampling.
    pub traces: TraceConfig,
    /// RED metrics from spans, before sampling.
    pub span_metrics: SpanMetricsConfig,
    /// SLAs from Prometheus series.
    pub sla: Vec<SlaSpec>,
    /// Region health from Prometheus series.
    pub health: Option<HealthSpec>,
    /// Region-pair network telemetry.
    pub network: Option<NetworkSpec>,
    /// Capacity planning per resource.
    pub capacity: Vec<CapacitySpec>,
    /// Reporting and bounds of the SLA, health, network and capacity operator.
    pub derived: DerivedLimits,
    /// Anomaly detection on the series matching `anomaly.series`.
    pub anomaly: dwcp_operators::anomaly::operator::AnomalyOperatorConfig,
    /// Directory for local snapshots of operator state (SLA budgets, health, capacity
    /// history), restored at start; none: state starts empty after a restart.
    pub state_dir: Option<PathBuf>,
    /// Snapshot interval, ms.
    pub checkpoint_interval_ms: u64,
}

/// Reporting and bounds of the derived operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DerivedLimits {
    /// SLA reports every this many ms of event time (a multiple of 60000).
    pub report_interval_ms: u64,
    /// Bound on SLA groups, regions, pairs and capacity keys, each.
    pub max_groups: usize,
    /// Bound on counter series tracked for increments.
    pub max_counter_series: usize,
    /// Regions and pairs without data for this many minutes stop being reported.
    pub expire_minutes: u64,
}

impl Default for DerivedLimits {
    fn default() -> Self {
        let d = DerivedConfig::default();
        DerivedLimits {
            report_interval_ms: d.report_interval_ms,
            max_groups: d.max_groups,
            max_counter_series: d.max_counter_series,
            expire_minutes: d.expire_minutes,
        }
    }
}

impl OperatorsConfig {
    /// The derived operator's configuration.
    pub fn derived_config(&self) -> DerivedConfig {
        DerivedConfig {
            sla: self.sla.clone(),
            health: self.health.clone(),
            network: self.network.clone(),
            capacity: self.capacity.clone(),
            report_interval_ms: self.derived.report_interval_ms,
            max_groups: self.derived.max_groups,
            max_counter_series: self.derived.max_counter_series,
            expire_minutes: self.derived.expire_minutes,
        }
    }
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            allowed_lateness_ms: 2_000,
            idle_timeout_ms: 30_000,
            max_future_skew_ms: 3_600_000,
            activity_window_ms: 5_000,
            dark_after_ms: 15_000,
            max_regions: 256,
            prometheus: PromConfig::default(),
            cardinality: CardinalityConfig::default(),
            aggregation: AggregationConfig::default(),
            traces: TraceConfig::default(),
            span_metrics: SpanMetricsConfig::default(),
            sla: Vec::new(),
            health: None,
            network: None,
            capacity: Vec::new(),
            derived: DerivedLimits::default(),
            anomaly: dwcp_operators::anomaly::operator::AnomalyOperatorConfig::default(),
            state_dir: None,
            checkpoint_interval_ms: 60_000,
        }
    }
}

/// Destinations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// JSON lines of every decoded record.
    pub file: Option<FileSinkConfig>,
    /// Prometheus remote-write endpoints (Prometheus, VictoriaMetrics, Mimir, ...).
    pub prometheus_remote_write: Vec<RemoteWriteConfig>,
    /// Elasticsearch / OpenSearch for logs and sampled traces.
    pub elasticsearch: Option<EsConfig>,
    /// Alertmanagers; each gets every alert.
    pub alertmanager: Vec<AlertmanagerConfig>,
    /// Grafana annotations (and dashboards at startup).
    pub grafana: Option<GrafanaSinkConfig>,
}

/// A topic after validation: its regex compiled and region shared.
#[derive(Debug, Clone)]
pub struct ResolvedTopic {
    /// The configured entry.
    pub config: TopicConfig,
    /// The compiled pattern, for `^` names.
    pub pattern: Option<regex::Regex>,
    /// The configured region, shared.
    pub region: Option<Arc<str>>,
    /// An internal topic of the repartitioning stage (the region travels in a header).
    pub internal: bool,
}

impl ResolvedTopic {
    /// Whether this entry covers `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.pattern {
            Some(re) => re.is_match(topic),
            None => self.config.name == topic,
        }
    }
}

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The configuration.
    pub config: Config,
    /// The rule groups of `rules.files`, checked.
    pub rule_groups: Vec<dwcp_operators::rules::Group>,
    /// Topics with compiled patterns, in config order (the first match wins).
    pub topics: Vec<ResolvedTopic>,
    /// API keys with their secrets read.
    pub api_keys: Vec<crate::api::ApiKey>,
    /// The Grafana token, read.
    pub grafana_token: Option<String>,
    /// Where it came from, for messages.
    pub file: PathBuf,
}

impl ValidatedConfig {
    /// The entry for a topic the consumer got a message from.
    pub fn topic(&self, name: &str) -> Option<&ResolvedTopic> {
        self.topics.iter().find(|t| t.matches(name))
    }

    /// With repartitioning on: the first stage's view (the metric and span inputs, read by the
    /// group `<group_id>.repartition`), or `None` when no input needs re-keying.
    pub fn repartition_stage(&self) -> Option<ValidatedConfig> {
        if !self.config.repartition.enabled {
            return None;
        }
        let mut c = self.clone();
        c.topics.retain(|t| t.config.signal != Signal::Logs);
        if c.topics.is_empty() {
            return None;
        }
        c.config.source.group_id = format!("{}.repartition", self.config.source.group_id);
        Some(c)
    }

    /// The keyed stage's view: with repartitioning on, the log inputs and the internal topics;
    /// else the configuration itself.
    pub fn keyed_stage(&self) -> ValidatedConfig {
        let rp = &self.config.repartition;
        if !rp.enabled {
            return self.clone();
        }
        let mut c = self.clone();
        c.topics.retain(|t| t.config.signal == Signal::Logs);
        for (name, signal) in [(&rp.series_topic, Signal::Metrics), (&rp.spans_topic, Signal::Traces)] {
            c.topics.push(ResolvedTopic {
                config: TopicConfig::named(name, signal),
                pattern: None,
                region: None,
                internal: true,
            });
        }
        c
    }
}

/// Reads, parses, applies environment overrides and validates `file`.
///
/// # Errors
/// A [`ConfigError`] naming the file and field.
pub fn load(file: &Path) -> Result<ValidatedConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.into(),
        source,
    })?;
    let overrides: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("DWCP__")).collect();
    parse(&text, file, &overrides)
}

/// Parses and validates configuration text; `overrides` are `(DWCP__A__B, value)` pairs.
///
/// # Errors
/// A [`ConfigError`] naming the file and field.
pub fn parse(text: &str, file: &Path, overrides: &[(String, String)]) -> Result<ValidatedConfig, ConfigError> {
    let parse_err = |path: String, location: String, message: String| ConfigError::Parse {
        file: file.into(),
        path,
        location,
        message,
    };
    // First the file alone, so errors carry its line numbers.
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let location = inner
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            // serde_yaml appends its own " at line X column Y"; keep the message clean.
            let mut message = inner.to_string();
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            // ...and prefixes the path (or its parent) we already print.
            if let Some((head, rest)) = message.split_once(": ") {
                if path.starts_with(head) {
                    message = rest.to_string();
                }
            }
            parse_err(if path == "." { String::new() } else { path }, location, message)
        })?
    };
    let config = if overrides.is_empty() {
        config
    } else {
        let mut value =
            serde_yaml::to_value(&config).map_err(|e| parse_err(String::new(), String::new(), e.to_string()))?;
        for (key, raw) in overrides {
            let segments: Vec<String> = key
                .trim_start_matches("DWCP__")
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let parsed: serde_yaml::Value = serde_yaml::from_str(raw).unwrap_or(serde_yaml::Value::String(raw.clone()));
            set_path(&mut value, &segments, parsed);
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let names: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
            parse_err(
                path,
                format!(" (from environment {})", names.join(", ")),
                e.into_inner().to_string(),
            )
        })?
    };
    validate(config, file)
}

fn set_path(value: &mut serde_yaml::Value, path: &[String], new: serde_yaml::Value) {
    let Some((first, rest)) = path.split_first() else {
        *value = new;
        return;
    };
    if !value.is_mapping() {
        *value = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
    }
    if let serde_yaml::Value::Mapping(m) = value {
        let key = serde_yaml::Value::String(first.clone());
        let slot = m.entry(key).or_insert(serde_yaml::Value::Null);
        set_path(slot, rest, new);
    }
}

fn validate(config: Config, file: &Path) -> Result<ValidatedConfig, ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        file: file.into(),
        field: field.into(),
        message,
    };
    if config.source.brokers.trim().is_empty() {
        return Err(invalid("source.brokers", "must name at least one host:port".into()));
    }
    if config.source.group_id.trim().is_empty() {
        return Err(invalid("source.group_id", "must not be empty".into()));
    }
    if config.source.topics.is_empty() {
        return Err(invalid("source.topics", "must list at least one topic".into()));
    }
    if !matches!(config.source.auto_offset_reset.as_str(), "earliest" | "latest") {
        return Err(invalid(
            "source.auto_offset_reset",
            format!("`{}`: expected earliest or latest", config.source.auto_offset_reset),
        ));
    }
    if config.source.queue_capacity == 0 {
        return Err(invalid("source.queue_capacity", "must be at least 1".into()));
    }
    if config.source.commit_interval_ms == 0 {
        return Err(invalid("source.commit_interval_ms", "must be at least 1".into()));
    }
    for (key, value) in &config.source.consumer_options {
        let field = format!("source.consumer_options.{key}");
        let refused = match key.as_str() {
            "bootstrap.servers" => Some("set source.brokers instead"),
            "group.id" => Some("set source.group_id instead"),
            "auto.offset.reset" => Some("set source.auto_offset_reset instead"),
            // Offsets are committed once every sink accepted the records below them: librdkafka
            // committing on its own would skip records the sinks still hold after a crash.
            "enable.auto.commit" | "enable.auto.offset.store" if value.trim() != "false" => {
                Some("must stay false: offsets are committed once every sink has accepted the records")
            }
            // The lag per partition (a caught-up partition stops holding event time back) and
            // the consumer group's state come from librdkafka's statistics.
            "statistics.interval.ms" if value.trim().parse::<u64>().map_or(true, |v| v == 0) => Some(
                "must be a positive number of milliseconds: the watermark and the group's state read the statistics",
            ),
            "partition.assignment.strategy" if value.trim() != "cooperative-sticky" => {
                Some("must stay cooperative-sticky: partitions and their state move incrementally")
            }
            _ => None,
        };
        if let Some(why) = refused {
            return Err(invalid(&field, format!("`{value}`: {why}")));
        }
    }
    let mut topics = Vec::new();
    for (i, t) in config.source.topics.iter().enumerate() {
        let field = format!("source.topics[{i}].name");
        if t.name.is_empty() {
            return Err(invalid(&field, "must not be empty".into()));
        }
        if config.dead_letter.enabled && t.name == config.dead_letter.topic {
            return Err(invalid(
                &field,
                "is the dead-letter topic; reading it would loop".into(),
            ));
        }
        let pattern = if t.is_pattern() {
            Some(regex::Regex::new(&t.name).map_err(|e| invalid(&field, format!("invalid regex: {e}")))?)
        } else {
            None
        };
        topics.push(ResolvedTopic {
            config: t.clone(),
            pattern,
            region: t.region.as_deref().map(Arc::from),
            internal: false,
        });
    }
    let rp = &config.repartition;
    if rp.enabled {
        for (field, name) in [
            ("repartition.series_topic", &rp.series_topic),
            ("repartition.spans_topic", &rp.spans_topic),
        ] {
            if name.trim().is_empty() {
                return Err(invalid(field, "must not be empty".into()));
            }
            if topics.iter().any(|t| t.matches(name))
                || (config.dead_letter.enabled && *name == config.dead_letter.topic)
            {
                return Err(invalid(
                    field,
                    format!(
                        "`{name}` is also an input or the dead-letter topic; the internal topics must be their own"
                    ),
                ));
            }
        }
        if rp.series_topic == rp.spans_topic {
            return Err(invalid(
                "repartition.spans_topic",
                "must differ from repartition.series_topic".into(),
            ));
        }
        if rp.partitions < 1 {
            return Err(invalid("repartition.partitions", "must be at least 1".into()));
        }
        if rp.replication_factor < 1 {
            return Err(invalid("repartition.replication_factor", "must be at least 1".into()));
        }
    }
    if config.operators.activity_window_ms == 0 {
        return Err(invalid("operators.activity_window_ms", "must be at least 1".into()));
    }
    let agg = &config.operators.aggregation;
    if agg.window_ms == 0 {
        return Err(invalid("operators.aggregation.window_ms", "must be at least 1".into()));
    }
    for (i, r) in agg.rules.iter().enumerate() {
        if r.metric.is_empty() {
            return Err(invalid(
                &format!("operators.aggregation.rules[{i}].metric"),
                "must not be empty".into(),
            ));
        }
    }
    for (name, bounds) in [
        (
            "operators.prometheus.exp_histogram_bounds",
            &config.operators.prometheus.exp_histogram_bounds,
        ),
        ("operators.aggregation.exp_histogram_bounds", &agg.exp_histogram_bounds),
    ] {
        if bounds.is_empty() || bounds.windows(2).any(|w| w[0] >= w[1]) || bounds.iter().any(|b| !b.is_finite()) {
            return Err(invalid(
                name,
                "must be finite, strictly increasing, and not empty".into(),
            ));
        }
    }
    let tc = &config.operators.traces;
    if tc.max_traces == 0 || tc.max_spans_per_trace == 0 {
        return Err(invalid(
            "operators.traces",
            "max_traces and max_spans_per_trace must be at least 1".into(),
        ));
    }
    fn check_policy(p: &Policy, field: &str) -> Result<(), String> {
        match p {
            Policy::StringAttribute {
                values,
                enabled_regex_matching: true,
                ..
            } => {
                for v in values {
                    regex::Regex::new(v).map_err(|e| format!("{field}: invalid regex `{v}`: {e}"))?;
                }
                Ok(())
            }
            Policy::Probabilistic {
                sampling_percentage, ..
            } if !(0.0..=100.0).contains(sampling_percentage) => {
                Err(format!("{field}: sampling_percentage must be within 0 and 100"))
            }
            Policy::And { and_sub_policy: s } | Policy::Drop { drop_sub_policy: s } => s
                .iter()
                .enumerate()
                .try_for_each(|(i, p)| check_policy(p, &format!("{field}.sub_policy[{i}]"))),
            _ => Ok(()),
        }
    }
    for (i, p) in tc.policies.iter().enumerate() {
        check_policy(p, &format!("operators.traces.policies[{i}]")).map_err(|m| {
            let (field, message) = m
                .split_once(": ")
                .map_or((m.clone(), String::new()), |(f, r)| (f.to_string(), r.to_string()));
            invalid(&field, message)
        })?;
    }
    match DerivedOperator::new(config.operators.derived_config()) {
        Err(e) => {
            let field = if e.field.starts_with("report_interval_ms") {
                format!("operators.derived.{}", e.field)
            } else {
                format!("operators.{}", e.field)
            };
            return Err(invalid(&field, e.message));
        }
        // With several workers its inputs are routed to one of them by metric name.
        Ok(op) if config.repartition.enabled && op.read_names().1 => {
            return Err(invalid(
                "repartition.enabled",
                "the SLA, health, network and capacity selectors must each name their metric (a selector by labels or a name pattern alone cannot be routed to the worker that runs them)".into(),
            ));
        }
        Ok(_) => {}
    }
    if let Err(e) = dwcp_operators::anomaly::operator::AnomalyOperator::new(config.operators.anomaly.clone()) {
        return Err(invalid(
            &format!("operators.anomaly.{}", e.split_once(": ").map_or("series", |x| x.0)),
            e,
        ));
    }
    if config.operators.checkpoint_interval_ms == 0 {
        return Err(invalid("operators.checkpoint_interval_ms", "must be at least 1".into()));
    }
    if config.derived_topics.enabled
        && (config.derived_topics.sla.is_empty()
            || config.derived_topics.health.is_empty()
            || config.derived_topics.alerts.is_empty())
    {
        return Err(invalid("derived_topics", "topic names must not be empty".into()));
    }
    if config.derived_topics.enabled && config.derived_topics.delivery == Delivery::ExactlyOnce {
        if !(config.repartition.enabled && config.repartition.changelog) {
            return Err(invalid(
                "derived_topics.delivery",
                "exactly_once needs repartition.enabled and repartition.changelog: a transaction commits the derived records with the state checkpoint that produced them".into(),
            ));
        }
        if config
            .derived_topics
            .transactional_id
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(invalid("derived_topics.transactional_id", "must not be empty".into()));
        }
    }
    let c = &config.operators.cardinality;
    if c.max_series_per_metric == 0 || c.max_series_total == 0 {
        return Err(invalid(
            "operators.cardinality",
            "max_series_per_metric and max_series_total must be at least 1".into(),
        ));
    }
    for (i, rw) in config.sinks.prometheus_remote_write.iter().enumerate() {
        let field = |f: &str| format!("sinks.prometheus_remote_write[{i}].{f}");
        if !(rw.url.starts_with("http://") || rw.url.starts_with("https://")) {
            return Err(invalid(&field("url"), format!("`{}` is not an http(s) URL", rw.url)));
        }
        if rw.shards == 0 || rw.max_samples_per_send == 0 || rw.queue_capacity == 0 {
            return Err(invalid(
                &field("shards"),
                "shards, max_samples_per_send and queue_capacity must be at least 1".into(),
            ));
        }
        if rw.min_backoff_ms > rw.max_backoff_ms {
            return Err(invalid(
                &field("min_backoff_ms"),
                "must not exceed max_backoff_ms".into(),
            ));
        }
        for (j, step) in rw.write_relabel_configs.iter().enumerate() {
            if let Err(e) = step.compile() {
                return Err(invalid(
                    &field(&format!("write_relabel_configs[{j}].{}", e.field)),
                    e.message,
                ));
            }
        }
    }
    for (i, am) in config.sinks.alertmanager.iter().enumerate() {
        if !(am.url.starts_with("http://") || am.url.starts_with("https://")) {
            return Err(invalid(
                &format!("sinks.alertmanager[{i}].url"),
                format!("`{}` is not an http(s) URL", am.url),
            ));
        }
    }
    if let Some(es) = &config.sinks.elasticsearch {
        if !(es.url.starts_with("http://") || es.url.starts_with("https://")) {
            return Err(invalid(
                "sinks.elasticsearch.url",
                format!("`{}` is not an http(s) URL", es.url),
            ));
        }
        if es.max_docs == 0 || es.queue_capacity == 0 {
            return Err(invalid(
                "sinks.elasticsearch.max_docs",
                "max_docs and queue_capacity must be at least 1".into(),
            ));
        }
    }
    if config.http.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            "http.listen",
            format!("`{}` is not an ip:port address", config.http.listen),
        ));
    }
    if !matches!(config.rules.prometheus_version, 2 | 3) {
        return Err(invalid("rules.prometheus_version", "must be 2 or 3".into()));
    }
    if config.rules.default_interval_ms == 0 {
        return Err(invalid("rules.default_interval_ms", "must be at least 1".into()));
    }
    let mut rule_groups = Vec::new();
    for (i, f) in config.rules.files.iter().enumerate() {
        let path = if f.is_relative() {
            file.parent().map_or_else(|| f.clone(), |d| d.join(f))
        } else {
            f.clone()
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(&format!("rules.files[{i}]"), format!("{}: {e}", path.display())))?;
        let groups = dwcp_operators::rules::load(
            &text,
            &path.display().to_string(),
            i64::try_from(config.rules.default_interval_ms).unwrap_or(i64::MAX),
        )
        .map_err(|e| invalid(&format!("rules.files[{i}]"), e))?;
        rule_groups.extend(groups);
    }
    let vars = |k: &str| std::env::var(k).ok();
    let mut api_keys: Vec<crate::api::ApiKey> = Vec::new();
    for (i, k) in config.api.keys.iter().enumerate() {
        let field = format!("api.keys[{i}].key");
        let key = secret(k.key.as_ref(), k.key_env.as_deref(), &field, &vars)
            .map_err(|m| {
                let (f, rest) = m.split_once(": ").unwrap_or((&field, &m));
                invalid(f, rest.to_string())
            })?
            .ok_or_else(|| invalid(&field, "give the secret as key or key_env".into()))?;
        if k.scopes.is_empty() {
            return Err(invalid(
                &format!("api.keys[{i}].scopes"),
                "must list at least one scope".into(),
            ));
        }
        if k.name.is_empty() {
            return Err(invalid(&format!("api.keys[{i}].name"), "must not be empty".into()));
        }
        if let Some(j) = api_keys.iter().position(|o| o.key == key || o.name == k.name) {
            return Err(invalid(
                &format!("api.keys[{i}]"),
                format!("has the same name or secret as api.keys[{j}]"),
            ));
        }
        api_keys.push(crate::api::ApiKey {
            name: k.name.clone(),
            key,
            scopes: k.scopes.clone(),
        });
    }
    let sc = &config.api.sql;
    if sc.enabled && (sc.retention_ms == 0 || sc.max_rows == 0 || sc.max_result_rows == 0) {
        return Err(invalid(
            "api.sql.retention_ms",
            "retention_ms, max_rows and max_result_rows must be at least 1".into(),
        ));
    }
    if config.api.enabled && (config.api.retention_ms == 0 || config.api.max_series == 0) {
        return Err(invalid(
            "api.retention_ms",
            "retention_ms and max_series must be at least 1".into(),
        ));
    }
    let mut grafana_token = None;
    if let Some(g) = &config.sinks.grafana {
        if !(g.url.starts_with("http://") || g.url.starts_with("https://")) {
            return Err(invalid(
                "sinks.grafana.url",
                format!("`{}` is not an http(s) URL", g.url),
            ));
        }
        grafana_token =
            secret(g.token.as_ref(), g.token_env.as_deref(), "sinks.grafana.token", &vars).map_err(|m| {
                let (f, rest) = m.split_once(": ").unwrap_or(("sinks.grafana.token", &m));
                invalid(f, rest.to_string())
            })?;
    }
    Ok(ValidatedConfig {
        config,
        rule_groups,
        topics,
        api_keys,
        grafana_token,
        file: file.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ValidatedConfig, ConfigError> {
        parse(text, Path::new("pipeline.yaml"), &[])
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = p("").expect("valid");
        let names: Vec<&str> = c.topics.iter().map(|t| t.config.name.as_str()).collect();
        assert_eq!(names, ["otlp_metrics", "otlp_spans", "otlp_logs"]);
        assert_eq!(c.config.dead_letter.topic, "dwcp.dlq");
    }

    const REPARTITION_OK: &str = "repartition: {enabled: true}\n";

    #[test]
    fn repartitioning_splits_the_inputs_between_two_stages() {
        let c = p(REPARTITION_OK).expect("valid");
        let stage = c.repartition_stage().expect("a re-keying stage");
        assert_eq!(stage.config.source.group_id, "dwcp-monitor.repartition");
        let names = |c: &ValidatedConfig| {
            c.topics
                .iter()
                .map(|t| (t.config.name.clone(), t.internal))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&stage),
            [("otlp_metrics".into(), false), ("otlp_spans".into(), false)]
        );
        let keyed = c.keyed_stage();
        assert_eq!(keyed.config.source.group_id, "dwcp-monitor");
        assert_eq!(
            names(&keyed),
            [
                ("otlp_logs".into(), false),
                ("dwcp.internal.series".into(), true),
                ("dwcp.internal.spans".into(), true)
            ]
        );
        assert_eq!(
            keyed.topic("dwcp.internal.series").map(|t| t.config.signal),
            Some(Signal::Metrics)
        );
        // Off: one stage, the configuration as it is.
        let off = p("").expect("valid");
        assert!(off.repartition_stage().is_none());
        assert_eq!(names(&off.keyed_stage()), names(&off));
    }

    #[test]
    fn exactly_once_needs_the_changelog_and_names_the_field() {
        let msg = p("derived_topics: {delivery: exactly_once}\n")
            .expect_err("no repartitioning")
            .to_string();
        assert!(
            msg.starts_with("pipeline.yaml: derived_topics.delivery: exactly_once needs repartition.enabled and repartition.changelog"),
            "{msg}"
        );
        let msg = p("repartition: {enabled: true, changelog: false}\nderived_topics: {delivery: exactly_once}\n")
            .expect_err("no changelog")
            .to_string();
        assert!(msg.starts_with("pipeline.yaml: derived_topics.delivery: "), "{msg}");
        let msg = p("repartition: {enabled: true}\nderived_topics: {delivery: exactly_once, transactional_id: \"\"}\n")
            .expect_err("empty id")
            .to_string();
        assert!(
            msg.starts_with("pipeline.yaml: derived_topics.transactional_id: must not be empty"),
            "{msg}"
        );
        let msg = p("derived_topics: {delivery: twice}\n")
            .expect_err("unknown")
            .to_string();
        assert!(
            msg.contains("derived_topics.delivery") && msg.contains("exactly_once"),
            "{msg}"
        );
        let c = p("repartition: {enabled: true}\nderived_topics: {delivery: exactly_once, transactional_id: w1}\n")
            .expect("valid");
        assert_eq!(c.config.derived_topics.delivery, Delivery::ExactlyOnce);
        assert_eq!(
            p("").expect("valid").config.derived_topics.delivery,
            Delivery::AtLeastOnce
        );
    }

    #[test]
    fn a_bad_relabeling_step_names_its_field_and_the_file() {
        let rw = |steps: &str| {
            format!("sinks:\n  prometheus_remote_write:\n    - url: http://p:9090/api/v1/write\n    - url: http://g:9090/api/v1/write\n      write_relabel_configs:\n{steps}")
        };
        let msg = p(&rw(
            "        - {source_labels: [__name__], regex: 'dwcp:(', action: keep}\n",
        ))
        .expect_err("bad regex")
        .to_string();
        assert!(
            msg.starts_with("pipeline.yaml: sinks.prometheus_remote_write[1].write_relabel_configs[0].regex: `dwcp:(` is not a valid regular expression"),
            "{msg}"
        );
        let msg = p(&rw(
            "        - {action: keep}\n        - {source_labels: [a], action: upcase, target_label: b}\n",
        ))
        .expect_err("unknown action")
        .to_string();
        assert!(
            msg.contains("sinks.prometheus_remote_write[1].write_relabel_configs[1].action")
                && msg.contains("uppercase"),
            "{msg}"
        );
        let c = p(&rw(
            "        - {source_labels: [__name__], regex: 'dwcp:.*', action: keep}\n",
        ))
        .expect("valid");
        assert_eq!(
            c.config.sinks.prometheus_remote_write[1].write_relabel_configs[0].action,
            dwcp_sinks::prometheus::remote_write::RelabelAction::Keep
        );
        // Overrides from the environment go through serialization: the steps survive it.
        let c = parse(
            &rw("        - {source_labels: [__name__], regex: 'dwcp:.*', action: keep}\n"),
            Path::new("pipeline.yaml"),
            &[("DWCP__HTTP__LISTEN".into(), "127.0.0.1:9999".into())],
        )
        .expect("valid");
        assert_eq!(
            c.config.sinks.prometheus_remote_write[1].write_relabel_configs[0]
                .regex
                .as_deref(),
            Some("dwcp:.*")
        );
    }

    #[test]
    fn repartitioning_refuses_an_internal_topic_as_an_input() {
        let msg = p(&format!(
            "{REPARTITION_OK}source:\n  topics: [{{name: dwcp.internal.series, signal: metrics}}]\n"
        ))
        .expect_err("internal topic as input")
        .to_string();
        assert!(
            msg.starts_with("pipeline.yaml: repartition.series_topic: `dwcp.internal.series` is also an input"),
            "{msg}"
        );
    }

    #[test]
    fn consumer_options_the_worker_relies_on_are_refused_naming_the_field() {
        let err = |opts: &str| {
            p(&format!("source:\n  consumer_options: {{{opts}}}\n"))
                .expect_err("refused")
                .to_string()
        };
        let msg = err("enable.auto.commit: \"true\"");
        assert!(
            msg.starts_with("pipeline.yaml: source.consumer_options.enable.auto.commit: `true`: must stay false"),
            "{msg}"
        );
        let msg = err("statistics.interval.ms: \"0\"");
        assert!(
            msg.starts_with("pipeline.yaml: source.consumer_options.statistics.interval.ms: `0`: must be a positive"),
            "{msg}"
        );
        let msg = err("group.id: other");
        assert!(msg.contains("set source.group_id instead"), "{msg}");
        let msg = err("partition.assignment.strategy: range");
        assert!(msg.contains("must stay cooperative-sticky"), "{msg}");
        // What the worker sets itself, set the same, and everything else, are fine.
        p("source:\n  consumer_options: {enable.auto.commit: \"false\", statistics.interval.ms: \"1000\", session.timeout.ms: \"10000\", security.protocol: SASL_SSL}\n")
            .expect("valid");
    }

    #[test]
    fn wrong_type_names_file_field_and_line() {
        let err = p("source:\n  brokers: a:9092\n  commit_interval_ms: soon\n").expect_err("wrong type");
        let msg = err.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(
            msg.starts_with(
                "pipeline.yaml: source.commit_interval_ms at line 3 column 23: invalid type: string \"soon\""
            ),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_names_it() {
        let err = p("source:\n  brokerz: a:9092\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "pipeline.yaml: source.brokerz at line 2 column 3: unknown field `brokerz`, expected one of"
            ),
            "{msg}"
        );
    }

    #[test]
    fn bad_enum_in_a_list_names_the_index() {
        let err = p("source:\n  topics:\n    - name: t\n      signal: metrics\n      encoding: otlp_xml\n")
            .expect_err("bad enum");
        let msg = err.to_string();
        assert!(
            msg.starts_with("pipeline.yaml: source.topics[0].encoding at line 5 column 17: unknown variant `otlp_xml`"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_names_it() {
        let err = load(Path::new("/nonexistent/dwcp.yaml")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/dwcp.yaml: cannot read: No such file"),
            "{err}"
        );
    }

    #[test]
    fn regex_topics_match_and_bad_regex_is_reported() {
        let c = p(
            "source:\n  topics:\n    - {name: '^otlp_metrics_.*', signal: metrics, encoding: otlp_json, region: eu}\n",
        )
        .expect("valid");
        let t = c.topic("otlp_metrics_eu").expect("matches");
        assert_eq!(t.config.encoding, Encoding::OtlpJson);
        assert_eq!(t.region.as_deref(), Some("eu"));
        assert!(c.topic("otlp_spans").is_none());
        let err = p("source:\n  topics:\n    - {name: '^(', signal: metrics}\n").expect_err("bad regex");
        assert!(
            err.to_string()
                .starts_with("pipeline.yaml: source.topics[0].name: invalid regex"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_fields() {
        let o = vec![
            ("DWCP__SOURCE__BROKERS".to_string(), "k1:9092,k2:9092".to_string()),
            ("DWCP__SOURCE__COMMIT_INTERVAL_MS".to_string(), "250".to_string()),
        ];
        let c = parse("source:\n  brokers: a:9092\n", Path::new("x.yaml"), &o).expect("valid");
        assert_eq!(c.config.source.brokers, "k1:9092,k2:9092");
        assert_eq!(c.config.source.commit_interval_ms, 250);
        let bad = vec![("DWCP__SOURCE__QUEUE_CAPACITY".to_string(), "many".to_string())];
        let err = parse("", Path::new("x.yaml"), &bad).expect_err("bad override");
        assert!(
            err.to_string()
                .contains("source.queue_capacity (from environment DWCP__SOURCE__QUEUE_CAPACITY)"),
            "{err}"
        );
    }
}
