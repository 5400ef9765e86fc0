//! `custflow connect` as a process: `kill -9` in the middle of a file and a restart put
//! every row on the topic exactly once (checked by content), and a 1 GB file streams
//! through the spool-dir source with flat memory.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use custflow_schemas::avro::AvroCodec;
use custflow_schemas::{Event, EventKind, ValidationContext};

use crate::{free_port, get, json_summary};

const ROWS: usize = 60_000;

#[test]
fn kill_9_in_the_middle_of_a_file_then_restart_puts_every_row_on_the_topic_once() {
    let _ = custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("conn-kill-");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut text = String::new();
    for i in 0..ROWS {
        // CDNOW rows with the sample-id column; every row distinct by content.
        let c = i % 7919 + 1;
        text.push_str(&format!(
            " {c:05} {c:05} 1997{:02}{:02}  {} {:>8.2}\r\n",
            i % 12 + 1,
            i % 28 + 1,
            i % 4 + 1,
            10.0 + (i % 1000) as f64 / 100.0
        ));
    }
    std::fs::write(dir.join("big.tmp"), &text).unwrap();
    std::fs::rename(dir.join("big.tmp"), dir.join("in/big.txt")).unwrap();
    let topic = format!("{prefix}orders");
    let cfg = dir.join("big.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"name": "big", "config": {
            "connector.class": "SpoolDirCsvSource",
            "csv.preset": "cdnow",
            "input.path": dir.join("in"),
            "finished.path": dir.join("done"),
            "topic": topic,
        }})
        .to_string(),
    )
    .unwrap();

    // First run: no periodic offset commit, so everything it delivers before the kill
    // is past the committed offsets.
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("first.log")).unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args([
            "connect",
            "--topic-prefix",
            &prefix,
            "--connect-http",
            &addr,
        ])
        .args(["--offset-flush-ms", "600000", "--batch-max", "1000"])
        .arg(&cfg)
        .env("CUSTFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the first run made no progress");
        assert!(first.try_wait().unwrap().is_none(), "the first run exited");
        if std::net::TcpStream::connect(&addr).is_ok() {
            let (_, body) = get(&addr, "/connectors/big/status");
            let st: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let done = st["tasks"][0]["progress"]["records"].as_u64().unwrap_or(0);
            if done >= (ROWS / 4) as u64 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(
        dir.join("in/big.txt").is_file(),
        "the file was finished before the kill"
    );

    // Second run: the config comes from the configs topic; it resumes and ends.
    let summary = json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args([
                "connect",
                "--topic-prefix",
                &prefix,
                "--json",
                "--exit-when-idle",
            ])
            .args(["--connect-http", &format!("127.0.0.1:{}", free_port())]),
    );
    assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["files"], 1, "{summary}");
    let recovered = summary["recovered"].as_u64().unwrap();
    assert!(
        recovered > 0,
        "the records delivered before the kill were found: {summary}"
    );
    assert!(dir.join("done/big.txt").is_file(), "the file was moved");

    // Every row once, by content: the order id names the row's line.
    let msgs = custflow_tests::read_topic(&topic, ROWS);
    let codec = AvroCodec::builtin();
    let ctx = ValidationContext::now();
    let values: Vec<f64> = text
        .lines()
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, _, v) in &msgs {
        let Event::Order(o) = codec.decode(EventKind::Order, v, &ctx).unwrap() else {
            panic!("not an order");
        };
        let line: usize = o
            .order_id
            .strip_prefix("big.txt:")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (o.total - values[line - 1]).abs() < 1e-9,
            "line {line}: {o:?}"
        );
        *seen.entry(o.order_id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "rows on the topic more than once: {twice:?}"
    );
    assert_eq!(seen.len(), ROWS, "rows missing from the topic");
    assert_eq!(msgs.len(), ROWS);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_1_gb_file_streams_with_flat_memory() {
    let dir = std::env::temp_dir().join(custflow_tests::unique("conn-1gb-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("retail.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        f,
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country"
    )
    .unwrap();
    let mut block = String::new();
    for i in 0..10_000 {
        let invoice = 500_000 + i / 4;
        block.push_str(&format!(
            "{invoice},{},\"ITEM {i}, BOXED\",{},2010-12-01 08:{:02}:00,{}.25,{}.0,United Kingdom\n",
            20_000 + i,
            i % 12 + 1,
            i % 60,
            i % 9 + 1,
            12_000 + i / 4 % 4_000
        ));
    }
    let mut written = 0u64;
    while written < 1 << 30 {
        f.write_all(block.as_bytes()).unwrap();
        written += block.len() as u64;
    }
    f.flush().unwrap();
    drop(f);
    let summary = json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["bench", "csv", "--preset", "online-retail"])
            .arg(&path),
    );
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        summary["bytes"].as_u64().unwrap() >= 1 << 30,
        "the whole file was read: {summary}"
    );
    assert_eq!(summary["dead_letters"], 0, "{summary}");
    // One order per invoice of four rows.
    let rows = written / block.len() as u64 * 10_000;
    assert_eq!(summary["records"].as_u64().unwrap(), rows / 4, "{summary}");
    let rss = summary["max_rss_mb"].as_f64().unwrap();
    assert!(
        rss > 0.0 && rss < 100.0,
        "peak memory {rss} MiB for a 1 GiB file: {summary}"
    );
}
