//! Grafana as code: dashboards generated from the metric catalog ([`catalog`]), the provisioning
//! files for the datasources and dashboards, `dwcp-monitor grafana export DIR`, and the HTTP
//! client that pushes dashboards and posts annotations ([`client`]).
//!
//! Every panel query is PromQL over series in the catalog; generation fails on a name that is
//! not there. The datasources have fixed uids, so dashboards and provisioning agree:
//! `dwcp-prometheus` (Prometheus or any remote-write store), `dwcp-worker` (a worker's API as a
//! Prometheus datasource), `dwcp-elasticsearch` (logs), `dwcp-jaeger` (Jaeger over the span
//! indices), `dwcp-alertmanager`.

pub mod catalog;
pub mod client;

use std::path::Path;

use serde_json::{json, Value};

/// Prometheus (or VictoriaMetrics, Mimir: whatever remote-write feeds).
pub const PROMETHEUS: &str = "dwcp-prometheus";
/// A worker's monitoring API.
pub const WORKER: &str = "dwcp-worker";
/// Elasticsearch / OpenSearch logs.
pub const ELASTICSEARCH: &str = "dwcp-elasticsearch";
/// Jaeger query over the span indices.
pub const JAEGER: &str = "dwcp-jaeger";
/// Alertmanager.
pub const ALERTMANAGER: &str = "dwcp-alertmanager";

/// The dashboards' schema version (Grafana 10.4 / 11).
pub const SCHEMA_VERSION: u64 = 39;

/// One query of a panel.
#[derive(Debug, Clone)]
pub enum Query {
    /// PromQL on `dwcp-prometheus`: expression, legend, instant (table) or range.
    Prom {
        /// The expression (`$region`, `$__rate_interval` allowed).
        expr: String,
        /// Legend format.
        legend: &'static str,
        /// An instant query formatted as a table (stats, tables, node graphs).
        instant: bool,
    },
    /// A Jaeger trace search.
    Jaeger {
        /// The service (`namespace/name`, as `job`).
        service: &'static str,
    },
    /// An Elasticsearch logs query (Lucene).
    Logs {
        /// The query.
        query: &'static str,
    },
    /// Alertmanager's alert list (panel options, no query).
    AlertList,
}

/// One panel.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title.
    pub title: &'static str,
    /// Grafana panel type.
    pub kind: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Width of 24, height.
    pub size: (u64, u64),
    /// Queries.
    pub queries: Vec<Query>,
    /// Extra panel options.
    pub options: Value,
    /// Transformations.
    pub transformations: Value,
}

fn panel(title: &'static str, kind: &'static str, unit: &'static str, queries: Vec<Query>) -> Panel {
    Panel {
        title,
        kind,
        unit,
        size: (12, 8),
        queries,
        options: json!({}),
        transformations: json!([]),
    }
}

fn prom(expr: &str, legend: &'static str) -> Query {
    Query::Prom {
        expr: expr.to_string(),
        legend,
        instant: false,
    }
}

fn table(expr: &str) -> Query {
    Query::Prom {
        expr: expr.to_string(),
        legend: "",
        instant: true,
    }
}

/// A dashboard before rendering.
#[derive(Debug, Clone)]
pub struct Board {
    /// uid.
    pub uid: &'static str,
    /// Title.
    pub title: &'static str,
    /// What it shows.
    pub description: &'static str,
    /// With a `$region` variable.
    pub region_variable: bool,
    /// Panels, laid out left to right, top to bottom.
    pub panels: Vec<Panel>,
}

const RATE: &str = "$__rate_interval";

/// The dashboards.
pub fn boards() -> Vec<Board> {
    let r = RATE;
    let mut node_graph = panel(
        "Region-pair network",
        "nodeGraph",
        "ms",
        vec![
            table("label_replace(dwcp_region_health_score, \"id\", \"$1\", \"region\", \"(.*)\")"),
            table(
                "label_replace(label_replace(label_join(dwcp_network_latency_milliseconds, \"id\", \"->\", \"region\", \"peer_region\"), \"source\", \"$1\", \"region\", \"(.*)\"), \"target\", \"$1\", \"peer_region\", \"(.*)\")",
            ),
        ],
    );
    node_graph.size = (24, 10);
    node_graph.transformations = json!([
        {"id": "organize", "options": {"renameByName": {"Value #A": "mainstat", "region": "title"}, "excludeByName": {"Time": true}}},
        {"id": "organize", "options": {"renameByName": {"Value #B": "mainstat"}}}
    ]);
    let mut heatmap = panel(
        "Latency heatmap",
        "heatmap",
        "ms",
        vec![Query::Prom {
            expr: format!("sum by (le) (increase(dwcp_latency_milliseconds_bucket{{region=\"$region\"}}[{r}]))"),
            legend: "{{le}}",
            instant: false,
        }],
    );
    heatmap.options = json!({"calculate": false, "yAxis": {"unit": "ms"}, "cellGap": 1});
    let mut traces = panel(
        "Traces of dwcp-gateway",
        "table",
        "",
        vec![Query::Jaeger {
            service: "dwcp/dwcp-gateway",
        }],
    );
    traces.size = (24, 10);
    let mut logs = panel(
        "Error logs",
        "logs",
        "",
        vec![Query::Logs {
            query: "severity_number:>=17",
        }],
    );
    logs.size = (24, 10);
    let mut alert_list = panel("Alertmanager alerts", "alertlist", "", vec![Query::AlertList]);
    alert_list.options = json!({"alertInstanceLabelFilter": "", "datasource": ALERTMANAGER, "groupMode": "default", "stateFilter": {"firing": true, "pending": true}, "viewMode": "list"});
    vec![
        Board {
            uid: "dwcp-global",
            title: "DWCP Global Overview",
            description: "Requests, errors, latency and connections across every region",
            region_variable: false,
            panels: vec![
                panel("Requests/s, all regions", "stat", "reqps", vec![prom(&format!("sum(rate(dwcp_requests_total[{r}]))"), "requests/s")]),
                panel("Region health", "stat", "none", vec![prom("dwcp_region_health_score", "{{region}}")]),
                panel("Requests/s by region", "timeseries", "reqps", vec![prom(&format!("sum by (region) (rate(dwcp_requests_total[{r}]))"), "{{region}}")]),
                panel(
                    "Error rate by region",
                    "timeseries",
                    "percentunit",
                    vec![prom(&format!("sum by (region) (rate(dwcp_errors_total[{r}])) / sum by (region) (rate(dwcp_requests_total[{r}]))"), "{{region}}")],
                ),
                panel(
                    "p95 latency by region",
                    "timeseries",
                    "ms",
                    vec![prom(&format!("histogram_quantile(0.95, sum by (region, le) (rate(dwcp_latency_milliseconds_bucket[{r}])))"), "{{region}}")],
                ),
                panel("Active connections by region", "timeseries", "short", vec![prom("sum by (region) (dwcp_active_connections)", "{{region}}")]),
            ],
        },
        Board {
            uid: "dwcp-regional",
            title: "DWCP Regional",
            description: "One region: requests by operation, latency distribution, resources, links",
            region_variable: true,
            panels: vec![
                panel(
                    "Requests/s by operation",
                    "timeseries",
                    "reqps",
                    vec![prom(&format!("sum by (operation) (rate(dwcp_requests_total{{region=\"$region\"}}[{r}]))"), "{{operation}}")],
                ),
                heatmap,
                panel(
                    "Resource utilization",
                    "timeseries",
                    "percentunit",
                    vec![
                        prom("dwcp_cpu_utilization_ratio{region=\"$region\"}", "cpu"),
                        prom("dwcp_consensus_health_ratio{region=\"$region\"}", "consensus"),
                    ],
                ),
                panel("Health factors", "bargauge", "none", vec![prom("dwcp_region_health_factor_score{region=\"$region\"}", "{{factor}}")]),
                node_graph,
            ],
        },
        Board {
            uid: "dwcp-protocol",
            title: "DWCP Protocol",
            description: "Message types, compression, bandwidth and protocol errors",
            region_variable: false,
            panels: vec![
                panel(
                    "Messages/s by type",
                    "timeseries",
                    "short",
                    vec![prom(&format!("sum by (message_type) (rate(dwcp_protocol_messages_total[{r}]))"), "{{message_type}}")],
                ),
                panel("Compression ratio by region", "timeseries", "short", vec![prom("avg by (region) (dwcp_compression_ratio)", "{{region}}")]),
                panel(
                    "Bandwidth utilization by link",
                    "timeseries",
                    "percentunit",
                    vec![prom("dwcp_network_utilization_ratio", "{{region}} → {{peer_region}}")],
                ),
                panel(
                    "Bytes/s sent by link",
                    "timeseries",
                    "Bps",
                    vec![prom(&format!("sum by (region, peer_region) (rate(dwcp_network_io_sent_bytes_total[{r}]))"), "{{region}} → {{peer_region}}")],
                ),
                panel(
                    "Protocol errors/s by type",
                    "timeseries",
                    "short",
                    vec![prom(&format!("sum by (region, error_type) (rate(dwcp_protocol_errors_total[{r}]))"), "{{region}} {{error_type}}")],
                ),
                panel("Packet loss by link", "timeseries", "percentunit", vec![prom("dwcp_network_packet_loss_ratio", "{{region}} → {{peer_region}}")]),
            ],
        },
        Board {
            uid: "dwcp-load-balancer",
            title: "DWCP Load Balancer",
            description: "Backend health, request distribution, failures and connection pools",
            region_variable: false,
            panels: vec![
                panel("Backend health", "state-timeline", "none", vec![prom("dwcp_lb_backend_up", "{{region}} {{backend}}")]),
                panel(
                    "Request distribution",
                    "piechart",
                    "reqps",
                    vec![prom(&format!("sum by (backend) (rate(dwcp_lb_requests_total[{r}]))"), "{{backend}}")],
                ),
                panel(
                    "Failure rate by backend",
                    "timeseries",
                    "percentunit",
                    vec![prom(&format!("sum by (backend) (rate(dwcp_lb_failures_total[{r}])) / sum by (backend) (rate(dwcp_lb_requests_total[{r}]))"), "{{backend}}")],
                ),
                panel("Connection pools", "timeseries", "short", vec![prom("sum by (backend, state) (dwcp_lb_pool_connections)", "{{backend}} {{state}}")]),
            ],
        },
        Board {
            uid: "dwcp-sla",
            title: "DWCP SLAs and error budgets",
            description: "Compliance, budgets and burn rates per SLA and region (global included)",
            region_variable: false,
            panels: vec![
                panel("Compliance", "timeseries", "percentunit", vec![prom("dwcp_sla_compliance_ratio", "{{sla}} {{region}}")]),
                panel("Error budget remaining", "bargauge", "percentunit", vec![prom("dwcp_error_budget_remaining_ratio", "{{sla}} {{region}}")]),
                panel("Burn rate, 1h window", "timeseries", "short", vec![prom("dwcp_sla_burn_rate{window=\"1h\"}", "{{sla}} {{region}}")]),
                panel("Burn alerts (1 ticket, 2 page)", "state-timeline", "none", vec![prom("dwcp_sla_burn_alert", "{{sla}} {{region}}")]),
                panel("Targets", "table", "percentunit", vec![table("dwcp_sla_target_ratio")]),
                panel("Tunnel status (1 up, 0.5 degraded, 0 down)", "state-timeline", "none", vec![prom("dwcp_tunnel_status", "{{region}} → {{peer_region}}")]),
            ],
        },
        Board {
            uid: "dwcp-anomalies",
            title: "DWCP Anomalies and alerts",
            description: "Anomaly scores, alerts from the rules, and the alert and anomaly annotations",
            region_variable: false,
            panels: vec![
                panel("Anomaly score", "timeseries", "percentunit", vec![prom("dwcp_anomaly_score", "{{metric}} {{region}} {{peer_region}}")]),
                panel("Alerts by state", "table", "none", vec![table("count by (alertname, alertstate, severity) (ALERTS)")]),
                panel("Round trips watched", "timeseries", "ms", vec![prom("dwcp_network_rtt_milliseconds", "{{region}} → {{peer_region}}")]),
                alert_list,
            ],
        },
        Board {
            uid: "dwcp-traces",
            title: "DWCP Traces",
            description: "Span rates and durations before sampling, cross-region hops, sampled traces and error logs",
            region_variable: false,
            panels: vec![
                panel(
                    "Spans/s by name",
                    "timeseries",
                    "short",
                    vec![prom(&format!("sum by (job, span_name) (rate(traces_span_metrics_calls_total[{r}]))"), "{{job}} {{span_name}}")],
                ),
                panel(
                    "Span p95 by name",
                    "timeseries",
                    "ms",
                    vec![prom(
                        &format!("histogram_quantile(0.95, sum by (span_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket[{r}])))"),
                        "{{span_name}}",
                    )],
                ),
                panel(
                    "Cross-region hop latency (mean)",
                    "timeseries",
                    "ms",
                    vec![prom("dwcp_cross_region_hop_latency_milliseconds{stat=\"mean\"}", "{{region}} → {{peer_region}}")],
                ),
                panel(
                    "Error spans/s by region",
                    "timeseries",
                    "short",
                    vec![prom(
                        &format!("sum by (region) (rate(traces_span_metrics_calls_total{{status_code=\"STATUS_CODE_ERROR\"}}[{r}]))"),
                        "{{region}}",
                    )],
                ),
                traces,
                logs,
            ],
        },
    ]
}

fn datasource(uid: &str) -> Value {
    let kind = match uid {
        PROMETHEUS | WORKER => "prometheus",
        ELASTICSEARCH => "elasticsearch",
        JAEGER => "jaeger",
        ALERTMANAGER => "alertmanager",
        _ => "grafana",
    };
    json!({"type": kind, "uid": uid})
}

fn target(q: &Query, ref_id: &str) -> Value {
    match q {
        Query::Prom { expr, legend, instant } => json!({
            "refId": ref_id,
            "datasource": datasource(PROMETHEUS),
            "expr": expr,
            "legendFormat": legend,
            "instant": instant,
            "range": !instant,
            "format": if *instant { "table" } else { "time_series" },
            "editorMode": "code",
        }),
        Query::Jaeger { service } => json!({
            "refId": ref_id,
            "datasource": datasource(JAEGER),
            "queryType": "search",
            "service": service,
            "limit": 20,
        }),
        Query::Logs { query } => json!({
            "refId": ref_id,
            "datasource": datasource(ELASTICSEARCH),
            "query": query,
            "metrics": [{"id": "1", "type": "logs"}],
            "bucketAggs": [],
            "timeField": "@timestamp",
        }),
        Query::AlertList => json!({"refId": ref_id, "datasource": datasource(ALERTMANAGER)}),
    }
}

fn panel_datasource(p: &Panel) -> &'static str {
    match p.queries.first() {
        Some(Query::Jaeger { .. }) => JAEGER,
        Some(Query::Logs { .. }) => ELASTICSEARCH,
        Some(Query::AlertList) => ALERTMANAGER,
        _ => PROMETHEUS,
    }
}

/// The dashboard JSON model of a board; `links` to every other board by tag.
pub fn render(b: &Board) -> Value {
    let (mut x, mut y, mut row_h) = (0, 0, 0);
    let mut panels = Vec::new();
    for (i, p) in b.panels.iter().enumerate() {
        let (w, h) = p.size;
        if x + w > 24 {
            x = 0;
            y += row_h;
            row_h = 0;
        }
        let targets: Vec<Value> = p
            .queries
            .iter()
            .enumerate()
            .map(|(k, q)| target(q, &((b'A' + u8::try_from(k).unwrap_or(25)) as char).to_string()))
            .collect();
        panels.push(json!({
            "id": i + 1,
            "type": p.kind,
            "title": p.title,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "datasource": datasource(panel_datasource(p)),
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "options": p.options,
            "transformations": p.transformations,
        }));
        x += w;
        row_h = row_h.max(h);
    }
    let mut variables = Vec::new();
    if b.region_variable {
        let q = "label_values(dwcp_requests_total, region)";
        variables.push(json!({
            "name": "region",
            "label": "Region",
            "type": "query",
            "datasource": datasource(PROMETHEUS),
            "definition": q,
            "query": {"query": q, "refId": "region"},
            "refresh": 2,
            "sort": 1,
            "includeAll": false,
            "multi": false,
            "current": {},
        }));
    }
    json!({
        "uid": b.uid,
        "title": b.title,
        "description": b.description,
        "tags": ["dwcp", "dwcp-monitor"],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": true, "hide": true,
             "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
            {"datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": true, "iconColor": "red",
             "name": "dwcp-monitor alerts", "target": {"type": "tags", "tags": ["dwcp", "alert"], "matchAny": false, "limit": 100}},
            {"datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": true, "iconColor": "purple",
             "name": "dwcp-monitor anomalies", "target": {"type": "tags", "tags": ["dwcp", "anomaly"], "matchAny": false, "limit": 100}},
            {"datasource": datasource(PROMETHEUS), "enable": false, "iconColor": "orange", "name": "Firing alerts (ALERTS series)",
             "expr": "ALERTS{alertstate=\"firing\"}", "step": "60s", "titleFormat": "{{alertname}}", "tagKeys": "region,severity"}
        ]},
        "links": [{"type": "dashboards", "tags": ["dwcp"], "asDropdown": true, "title": "DWCP dashboards", "includeVars": false, "keepTime": true}],
        "panels": panels,
    })
}

/// The datasources provisioning file. URLs are the service names of deploy/ (compose and
/// Kubernetes); Grafana expands `$DWCP_API_KEY` from its environment.
pub fn datasources_yaml() -> String {
    let ds = |name: &str, uid: &str, url: &str, json_data: Value| json!({"name": name, "uid": uid, "type": datasource(uid)["type"], "access": "proxy", "url": url, "jsonData": json_data});
    let mut prometheus = ds(
        "Prometheus",
        PROMETHEUS,
        "http://prometheus:9090",
        json!({"timeInterval": "15s"}),
    );
    prometheus["isDefault"] = json!(true);
    let mut worker = ds(
        "dwcp-monitor worker",
        WORKER,
        "http://dwcp-monitor:8686",
        json!({"httpHeaderName1": "Authorization"}),
    );
    worker["secureJsonData"] = json!({"httpHeaderValue1": "Bearer $DWCP_API_KEY"});
    let doc = json!({
        "apiVersion": 1,
        "datasources": [
            prometheus,
            worker,
            ds("Elasticsearch logs", ELASTICSEARCH, "http://elasticsearch:9200",
               json!({"index": "dwcp-logs-*", "timeField": "@timestamp", "logMessageField": "body", "logLevelField": "severity_text"})),
            ds("Jaeger", JAEGER, "http://jaeger-query:16686",
               json!({"tracesToLogsV2": {"datasourceUid": ELASTICSEARCH, "filterByTraceID": true}})),
            ds("Alertmanager", ALERTMANAGER, "http://alertmanager:9093", json!({"implementation": "prometheus"})),
        ]
    });
    generated_yaml(&doc)
}

fn generated_yaml(doc: &Value) -> String {
    format!(
        "# Generated by `dwcp-monitor grafana export`; do not edit.\n{}",
        serde_yaml::to_string(doc).unwrap_or_default()
    )
}

/// The dashboards provisioning file: the JSON files under `path`, in folder DWCP.
pub fn dashboards_yaml(path: &str) -> String {
    generated_yaml(&json!({
        "apiVersion": 1,
        "providers": [{
            "name": "dwcp-monitor",
            "folder": "DWCP",
            "type": "file",
            "disableDeletion": false,
            "allowUiUpdates": false,
            "options": {"path": path},
        }]
    }))
}

/// Checks every board: unique panel ids, datasource uids among the provisioned ones, every
/// PromQL query parses and names only catalog series.
///
/// # Errors
/// The first problem, naming the dashboard and panel.
pub fn check(boards: &[Board]) -> Result<(), String> {
    for b in boards {
        for p in &b.panels {
            for q in &p.queries {
                if let Query::Prom { expr, .. } = q {
                    let e = promql::parse(&concrete(expr, "x"))
                        .map_err(|e| format!("{}: {}: `{expr}`: {e}", b.uid, p.title))?;
                    for name in promql::metric_names(&e) {
                        if catalog::family(&name).is_none() {
                            return Err(format!("{}: {}: series {name} is not in the catalog", b.uid, p.title));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

use dwcp_operators::promql;

/// A panel query with Grafana's variables replaced: `$region` by `region`, the rate interval by
/// 5 minutes.
pub fn concrete(expr: &str, region: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$region", region)
}

/// Writes `dir/dashboards/<uid>.json` and `dir/provisioning/{datasources,dashboards}/dwcp.yaml`.
///
/// # Errors
/// A check failure, or a file that cannot be written.
pub fn export(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let boards = boards();
    check(&boards).map_err(|e| anyhow::anyhow!("dashboards: {e}"))?;
    let mut written = Vec::new();
    let mut write = |path: std::path::PathBuf, text: String| -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for b in &boards {
        let text = serde_json::to_string_pretty(&render(b))? + "\n";
        write(dir.join("dashboards").join(format!("{}.json", b.uid)), text)?;
    }
    write(dir.join("provisioning/datasources/dwcp.yaml"), datasources_yaml())?;
    write(
        dir.join("provisioning/dashboards/dwcp.yaml"),
        dashboards_yaml("/var/lib/grafana/dashboards/dwcp"),
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests;
