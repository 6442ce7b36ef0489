//! Helpers for the end-to-end tests: the stack's addresses, topics, producing, and worker
//! processes of the real `dwcp-monitor` binary.
//!
//! The tests find the components through the variables `deploy/local/stack.sh up` exports
//! (`DWCP_TEST_KAFKA`, ...). Without them a test prints why it is skipped and passes, so a plain
//! `cargo test` still runs every unit test; the project's test command always sets them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;

/// The Kafka bootstrap address of the stack, or `None` (and a note on stderr) to skip.
pub fn kafka() -> Option<String> {
    match std::env::var("DWCP_TEST_KAFKA") {
        Ok(k) if !k.is_empty() => Some(k),
        _ => {
            eprintln!("skipped: DWCP_TEST_KAFKA not set (run deploy/local/test.sh, which starts the stack)");
            None
        }
    }
}

/// The shared fixtures directory.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("DWCP_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/otlp"),
    }
}

/// The fixture manifest.
pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("manifest.json readable");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// A name unique to this run, so tests never see each other's topics or groups.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Creates topics with `partitions` partitions each.
pub async fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await;
    for r in res.expect("create_topics request") {
        if let Err((name, code)) = r {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "create {name}"
            );
        }
    }
}

/// A producer with idempotence on.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer")
}

/// Produces one message and waits for its delivery; returns (partition, offset).
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    partition: Option<i32>,
) -> (i32, i64) {
    let mut rec = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    if let Some(part) = partition {
        rec = rec.partition(part);
    }
    let d = p
        .send(rec, Duration::from_secs(20))
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    (d.partition, d.offset)
}

/// The committed offsets of `group` for `topic`'s partitions `0..partitions` (missing = 0).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o,
            _ => 0,
        })
        .collect()
}

/// The alerts an Alertmanager lists (`GET /api/v2/alerts`) whose labels match `filter`
/// (`alertname="HighLatency"`).
pub async fn alertmanager_alerts(base: &str, filter: &str) -> Vec<serde_json::Value> {
    reqwest::Client::new()
        .get(format!("{base}/api/v2/alerts"))
        .query(&[("filter", filter)])
        .send()
        .await
        .expect("alertmanager")
        .json()
        .await
        .expect("json")
}

/// Seconds since the Unix epoch, now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A consumer of `topic` from its start, in a group of its own, committing nothing, waiting at
/// most 10 ms for a fetch (so a record is seen as soon as it lands).
pub fn reader(brokers: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// The leader of consumer groups whose members are then killed.
///
/// Tansu 0.6 keeps a group's leader when a surviving member's heartbeat finds the leader's
/// session expired and removes it (`Inner<Formed>::heartbeat`): the rebalance that follows
/// waits for that dead leader's assignment forever, and the dead member's partitions are never
/// handed over (Kafka elects a new leader). This consumer joins each group first, so it leads,
/// subscribed to a topic of its own (its one partition is all it is assigned), and lives until
/// dropped: the workers, which read every other topic, can then die without taking the leader.
pub struct GroupLeader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupLeader {
    /// Joins `groups` (creating `topic`, one partition) and waits until it leads every one.
    pub async fn start(brokers: &str, topic: &str, groups: &[&str]) -> GroupLeader {
        create_topics(brokers, &[topic], 1).await;
        let consumers: Vec<BaseConsumer> = groups
            .iter()
            .map(|g| {
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("group.id", *g)
                    .set("enable.auto.commit", "false")
                    .set("partition.assignment.strategy", "cooperative-sticky")
                    .create()
                    .expect("consumer");
                c.subscribe(&[topic]).expect("subscribe");
                c
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumers.iter().any(|c| c.assignment().map_or(0, |a| a.count()) == 0) {
            assert!(
                Instant::now() < deadline,
                "the group leader was assigned nothing in 60 s"
            );
            for c in &consumers {
                let _ = c.poll(Duration::from_millis(50));
            }
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        // Polled, so librdkafka keeps it in the groups (max.poll.interval.ms).
        let thread = std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                for c in &consumers {
                    let _ = c.poll(Duration::from_millis(50));
                }
            }
        });
        GroupLeader {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GroupLeader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads every message of `topic` (all partitions) until `count` arrived or `timeout` passed.
pub fn consume_all(brokers: &str, topic: &str, count: usize, timeout: Duration) -> Vec<rdkafka::message::OwnedMessage> {
    let c = reader(brokers, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

/// A worker: the real binary, as its own process.
pub struct Worker {
    child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Its stderr log.
    pub log: PathBuf,
}

/// The `dwcp-monitor` binary beside the test executable (built by `cargo test --workspace`),
/// or `DWCP_BIN`.
pub fn binary() -> PathBuf {
    if let Some(b) = std::env::var_os("DWCP_BIN") {
        return PathBuf::from(b);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("dwcp-monitor");
    assert!(
        bin.exists(),
        "{} missing: build it with cargo build -p dwcp-monitor",
        bin.display()
    );
    bin
}

impl Worker {
    /// Starts `dwcp-monitor run --config` with `yaml` (its `http.listen` is set here).
    pub fn start(dir: &Path, name: &str, yaml: &str) -> Worker {
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, format!("{yaml}\nhttp:\n  listen: \"127.0.0.1:{port}\"\n")).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("DWCP_TEST_WORKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn worker");
        Worker { child, port, log }
    }

    /// The worker's /metrics text, or an empty string while it is not up.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls /metrics until `metric` (summed over label sets matching `filter`) reaches `want`.
    ///
    /// Waits at least 3 minutes whatever `timeout` says: joining a consumer group on Tansu 0.6
    /// can take as long as the session timeout of a member that died (45 s by default), and on
    /// a loaded machine longer.
    pub async fn wait_for(&self, metric: &str, filter: &[(&str, &str)], want: f64, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout.max(Duration::from_secs(180));
        let mut last = 0.0;
        while Instant::now() < deadline {
            last = metric_sum(&self.metrics().await, metric, filter);
            if last >= want {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = self.metrics().await;
        panic!(
            "{metric}{filter:?} reached {last}, not {want}; metrics:\n{metrics}\nworker log:\n{}",
            self.log_text()
        );
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.append_backtrace();
        self.kill9();
        false
    }

    /// Appends every thread's stack (gdb, where installed) to the worker's log: what a stop
    /// that does not finish is waiting for.
    fn append_backtrace(&self) {
        let out = Command::new("gdb")
            .args([
                "-p",
                &self.child.id().to_string(),
                "-batch",
                "-ex",
                "thread apply all bt 30",
            ])
            .stdin(Stdio::null())
            .output();
        if let (Ok(out), Ok(mut f)) = (out, std::fs::OpenOptions::new().append(true).open(&self.log)) {
            use std::io::Write;
            let _ = writeln!(f, "---- still running 30 s after SIGTERM; its threads (gdb):");
            let _ = f.write_all(&out.stdout);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 4 minutes) until every worker owns at least one partition of each consumer
/// group in `groups`, and, for a group given a total, the workers own that many together.
pub async fn wait_groups_settled(workers: &[Worker], groups: &[(&str, Option<f64>)]) {
    wait_groups_settled_among(&workers.iter().collect::<Vec<_>>(), groups).await;
}

/// [`wait_groups_settled`] for workers kept apart.
pub async fn wait_groups_settled_among(workers: &[&Worker], groups: &[(&str, Option<f64>)]) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut owned = Vec::new();
        for w in workers {
            let m = w.metrics().await;
            owned.push(
                groups
                    .iter()
                    .map(|(g, _)| metric_sum(&m, "dwcp_assigned_partitions", &[("group", g)]))
                    .collect::<Vec<f64>>(),
            );
        }
        let settled = groups.iter().enumerate().all(|(i, (_, total))| {
            owned.iter().all(|o| o[i] >= 1.0) && total.is_none_or(|t| owned.iter().map(|o| o[i]).sum::<f64>() == t)
        });
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "groups {groups:?} did not settle: {owned:?}\n{}",
            workers
                .iter()
                .map(|w| w.log_text())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sums the samples of `metric` whose labels include every `filter` pair.
pub fn metric_sum(text: &str, metric: &str, filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            &l[..name_end] == metric
        })
        .filter(|l| filter.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The JSON lines of a file sink's output.
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// A Prometheus server of its own for one test (the stack's `prometheus` binary, a data
/// directory and a port of the test's), so a test can stop and restart it and write samples
/// of any age without other tests' data in the way.
pub struct PrometheusServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl PrometheusServer {
    /// Starts one with the remote-write receiver on; waits until it is ready.
    pub async fn start(dir: &Path) -> PrometheusServer {
        let mut p = PrometheusServer {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        std::fs::create_dir_all(self.dir.join("data")).expect("data dir");
        let cfg = self.dir.join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n").expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus on PATH (deploy/local/stack.sh install)");
        self.child = Some(child);
        let url = format!("{}/-/ready", self.url());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prometheus did not become ready:\n{}",
            std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its remote-write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Stops it (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An instant query against a Prometheus-API server at `time` (seconds): each series' labels and
/// value.
pub async fn instant_query(
    base: &str,
    query: &str,
    time: f64,
) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    let url = format!("{base}/api/v1/query");
    let resp = reqwest::Client::new()
        .get(&url)
        .query(&[("query", query), ("time", &format!("{time:.3}"))])
        .send()
        .await
        .expect("query sent");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "success", "{query}: {body}");
    body["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let v = s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(f64::NAN);
                    (labels, v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `instant_query` until it returns `want` series or `timeout` passes.
pub async fn wait_query(
    base: &str,
    query: &str,
    time: f64,
    want: usize,
    timeout: Duration,
) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = instant_query(base, query, time).await;
        if r.len() >= want || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An Alertmanager of its own for one test (the stack's `prometheus-alertmanager` binary),
/// routing every alert to `webhook` at once (group_wait and group_interval 1 s).
pub struct AlertmanagerServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl AlertmanagerServer {
    /// Starts one; waits until it is ready.
    pub async fn start(dir: &Path, webhook: &str) -> AlertmanagerServer {
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname, region]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: hook\n    webhook_configs:\n      - url: \"{webhook}\"\n        send_resolved: true\n"
            ),
        )
        .expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager on PATH (deploy/local/stack.sh install)");
        let am = AlertmanagerServer {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", am.url())).await {
                if r.status().is_success() {
                    return am;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("alertmanager did not become ready:\n{}", am.log());
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for AlertmanagerServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A webhook receiver on 127.0.0.1: every POSTed JSON body, in order. Answers 200, or the
/// status it was started with (a receiver that refuses everything).
pub struct WebhookReceiver {
    /// Its URL.
    pub url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl WebhookReceiver {
    /// Starts one.
    pub async fn start() -> WebhookReceiver {
        Self::start_answering("200 OK").await
    }

    /// Starts one that answers every request with `status` (`"503 Service Unavailable"`).
    pub async fn start_answering(status: &'static str) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = std::sync::Arc::default();
        let b = bodies.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let b = b.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Read the head, then Content-Length bytes of body.
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            if let Ok(v) = serde_json::from_slice(&buf[end + 4..end + 4 + len]) {
                                b.lock().expect("lock").push(v);
                            }
                            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            let _ = sock.write_all(answer.as_bytes()).await;
                            return;
                        }
                    }
                });
            }
        });
        WebhookReceiver {
            url: format!("http://{addr}/hook"),
            bodies,
        }
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("lock").clone()
    }
}
