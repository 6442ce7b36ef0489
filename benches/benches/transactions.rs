//! What exactly-once costs on the test stack's broker (Tansu 0.6.0 with
//! deploy/tansu/tansu.patch): one checkpoint round as the worker runs it, with and
//! without a transaction. A round writes a partition checkpoint of S bytes to a changelog
//! (`Changelog::write`, 512 KiB chunks) and N derived records of 600 bytes (an alert's Avro size);
//! with a transaction, begin + those writes + the consumed offsets
//! (sendOffsetsToTransaction) + commit. Each configuration runs ROUNDS times; median and p95.
//!
//! eval "$(deploy/local/stack.sh env)"; cargo bench -p dwcp-benches --bench transactions

use std::time::{Duration, Instant};

use dwcp_tests::{create_topics, unique};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;

const ROUNDS: usize = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let Ok(brokers) = std::env::var("DWCP_TEST_KAFKA") else {
        eprintln!("skipped: DWCP_TEST_KAFKA not set (deploy/local/stack.sh up)");
        return;
    };
    let id = unique("bench-txn");
    let yaml = format!(
        "source:\n  brokers: \"{brokers}\"\n  group_id: \"{id}\"\n\
         repartition:\n  enabled: true\n  changelog_prefix: \"{id}.state.\"\n"
    );
    let config = dwcp_pipeline::config::parse(&yaml, std::path::Path::new("bench.yaml"), &[]).expect("config");
    let (input, alerts) = (format!("{id}.in"), format!("{id}.alerts"));
    create_topics(&brokers, &[&input, &alerts], 1).await;
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &id)
        .create()
        .expect("consumer");
    let metadata = std::sync::Arc::new(consumer.group_metadata().expect("group metadata"));
    let producer = |transactional: bool| -> FutureProducer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "50")
            .set("message.max.bytes", "104857600")
            .set("compression.type", "lz4");
        if transactional {
            c.set("transactional.id", format!("{id}.tx"))
                .set("transaction.timeout.ms", "60000")
                .set("message.timeout.ms", "60000");
        }
        c.create().expect("producer")
    };
    let plain = producer(false);
    let txn = producer(true);
    txn.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    let cl_plain = dwcp_pipeline::changelog::Changelog::open(&config, Some(plain.clone()), "plain")
        .await
        .expect("changelog");
    let cl_txn = dwcp_pipeline::changelog::Changelog::open(&config, Some(txn.clone()), "txn")
        .await
        .expect("changelog");
    cl_plain.write(0, 1, b"warm-up").await.expect("warm-up");
    txn.begin_transaction().expect("begin");
    cl_txn.write(0, 1, b"warm-up").await.expect("warm-up");
    txn.commit_transaction(Duration::from_secs(30)).expect("commit");
    let record = vec![7u8; 600];

    println!(
        "| checkpoint | records | at least once: median / p95 | transaction: median / p95 | of which commit (median) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (size, records) in [
        (64 << 10, 0),
        (64 << 10, 100),
        (1 << 20, 100),
        (8 << 20, 100),
        (1 << 20, 1000),
    ] {
        let state = vec![42u8; size];
        let mut generation = 1;
        let mut at_least_once = Vec::new();
        for _ in 0..ROUNDS {
            generation += 1;
            let started = Instant::now();
            send_records(&plain, &alerts, &record, records).await;
            cl_plain.write(1, generation, &state).await.expect("write");
            at_least_once.push(started.elapsed());
        }
        let (mut transacted, mut commits) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            generation += 1;
            let started = Instant::now();
            let t = txn.clone();
            tokio::task::spawn_blocking(move || t.begin_transaction())
                .await
                .expect("join")
                .expect("begin");
            send_records(&txn, &alerts, &record, records).await;
            cl_txn.write(1, generation, &state).await.expect("write");
            let mut offsets = rdkafka::TopicPartitionList::new();
            offsets
                .add_partition_offset(&input, 0, rdkafka::Offset::Offset(i64::try_from(round).expect("round")))
                .expect("offset");
            let (t, m) = (txn.clone(), std::sync::Arc::clone(&metadata));
            let committing = Instant::now();
            tokio::task::spawn_blocking(move || {
                t.send_offsets_to_transaction(&offsets, &m, Duration::from_secs(30))?;
                t.commit_transaction(Duration::from_secs(30))
            })
            .await
            .expect("join")
            .expect("commit");
            commits.push(committing.elapsed());
            transacted.push(started.elapsed());
        }
        println!(
            "| {} KiB | {records} | {} / {} | {} / {} | {} |",
            size >> 10,
            ms(quantile(&mut at_least_once, 0.5)),
            ms(quantile(&mut at_least_once, 0.95)),
            ms(quantile(&mut transacted, 0.5)),
            ms(quantile(&mut transacted, 0.95)),
            ms(quantile(&mut commits, 0.5)),
        );
    }
}

/// Sends `n` records and waits until the broker has them all.
async fn send_records(p: &FutureProducer, topic: &str, payload: &[u8], n: usize) {
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("alert/{i}");
        deliveries.push(
            p.send_result(FutureRecord::to(topic).key(&key).payload(payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for d in deliveries {
        d.await.expect("delivery").map_err(|(e, _)| e).expect("delivered");
    }
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
