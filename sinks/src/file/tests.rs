use super::*;
use crate::ack::{Ack, AckReceiver};
use dwcp_schemas::{decode, Encoding, RegionContext, Signal};
use std::sync::Mutex;

#[derive(Default)]
struct Acks(Mutex<Vec<u64>>);
impl AckReceiver for Acks {
    fn done(&self, id: u64) {
        self.0.lock().expect("lock").push(id);
    }
}

#[tokio::test]
async fn writes_every_record_then_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.jsonl");
    let json = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"cloud.region","value":{"stringValue":"r"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"5","severityNumber":9,"body":{"stringValue":"a"}},
                                    {"timeUnixNano":"6","severityNumber":17,"body":{"stringValue":"b"}}]}]}]}"#;
    let records = decode(Signal::Logs, Encoding::OtlpJson, json, &RegionContext::default())
        .expect("decodes")
        .records;
    let acks = Arc::new(Acks::default());
    let (tx, rx) = mpsc::channel(4);
    let stats = Arc::new(FileSinkStats::default());
    let sink = FileSink::open(FileSinkConfig {
        path: path.clone(),
        fsync: true,
    })
    .await
    .expect("opens");
    let task = tokio::spawn(sink.run(rx, stats.clone()));
    let records = Arc::new(records);
    for id in [1, 2] {
        tx.send(Batch {
            records: records.clone(),
            ack: Ack::new(id, acks.clone()),
        })
        .await
        .expect("send");
    }
    drop(tx);
    task.await.expect("join");
    assert_eq!(*acks.0.lock().expect("lock"), vec![1, 2]);
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["body"], "b");
    assert_eq!(lines[1]["severity_number"], 17);
    assert_eq!(lines[1]["origin"]["region"], "r");
    assert_eq!(stats.records.get(), 4);
}

#[tokio::test]
async fn an_unwritable_path_fails_at_open() {
    let err = FileSink::open(FileSinkConfig {
        path: "/nonexistent/dir/out.jsonl".into(),
        fsync: false,
    })
    .await
    .expect_err("cannot open");
    assert!(
        err.to_string().starts_with("cannot open /nonexistent/dir/out.jsonl: "),
        "{err}"
    );
}
