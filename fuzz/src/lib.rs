//! The bodies of the fuzz targets: each feeds arbitrary bytes to a decoder of outside
//! input and checks that it answers (an error is a fine answer) without panicking, and
//! that an event it accepts survives a round trip through its encoder. The cargo-fuzz
//! binaries (`fuzz_targets/`, run by `scripts/fuzz.sh`) and the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`, on stable Rust in CI) share them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use custflow_connectors::connect::task;
use custflow_connectors::connect::ConnectorConfig;
use custflow_connectors::spooldir::presets::{self, GenericColumns, RetailColumns};
use custflow_schemas::avro::{self, AvroCodec};
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, CustomerScore, EventKind, SegmentChange, ValidationContext};
use serde_json::Value;

/// A target body: takes any bytes, panics only on a bug.
pub type Body = fn(&[u8]);

/// The input names every target is known by (`fuzz/corpus/<name>/`).
pub const TARGETS: [(&str, Body); 5] = [
    ("avro_wire", avro_wire),
    ("json_event", json_event),
    ("ndjson_body", ndjson_body),
    ("csv_presets", csv_presets),
    ("connector_config", connector_config),
];

fn codec() -> &'static AvroCodec {
    static CODEC: OnceLock<AvroCodec> = OnceLock::new();
    CODEC.get_or_init(AvroCodec::builtin)
}

/// Avro in the Confluent wire format: the three input events (fast and generic paths),
/// and the two output records the sink and the streams read.
pub fn avro_wire(data: &[u8]) {
    let ctx = ValidationContext::now();
    for kind in EventKind::ALL {
        if let Ok(event) = codec().decode(kind, data, &ctx) {
            let again = codec()
                .encode(&event)
                .unwrap_or_else(|e| panic!("an accepted {kind:?} does not encode: {e}"));
            let back = codec()
                .decode(kind, &again, &ctx)
                .unwrap_or_else(|e| panic!("a re-encoded {kind:?} does not decode: {e}"));
            assert_eq!(back, event, "the Avro round trip changed the event");
        }
    }
    if let Ok((_, datum)) = avro::unframe(data) {
        let _ = avro::decode_record::<CustomerScore>("CustomerScore", datum);
        let _ = avro::decode_record::<SegmentChange>("SegmentChange", datum);
    }
}

/// Plain JSON events per topic, tagged JSON (`"type"`) and Kafka Connect's envelope.
pub fn json_event(data: &[u8]) {
    let ctx = ValidationContext::now();
    for kind in EventKind::ALL {
        if let Ok(event) = json::decode(kind, data, &ctx) {
            let back = json::decode(kind, &json::encode(&event), &ctx)
                .unwrap_or_else(|e| panic!("a re-encoded {kind:?} does not decode: {e}"));
            assert_eq!(back, event, "the JSON round trip changed the event");
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = json::decode_tagged(&v, &ctx);
        let _ = json::decode_tagged(json::unwrap_envelope(&v), &ctx);
    }
}

/// `POST /v1/events` bodies: JSON, NDJSON and other content types, then every item.
pub fn ndjson_body(data: &[u8]) {
    let ctx = ValidationContext::now();
    for ct in [
        None,
        Some("application/x-ndjson"),
        Some("text/csv; charset=utf-8"),
    ] {
        if let Ok(items) = custflow_http::ingest::items(ct, data) {
            for item in items.into_iter().flatten() {
                let _ = json::decode_tagged(&item, &ctx);
            }
        }
    }
}

/// The spool-dir CSV presets: CDNOW lines, the Online Retail columns and rows (and an
/// invoice's rows as one order), and the generic column mapping (the header's first
/// three columns mapped to the required fields).
pub fn csv_presets(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().take(1000) {
            let _ = presets::cdnow_order(line, "o-1", &[b"fuzz"]);
            let _ = presets::parse_datetime(line);
        }
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut records = reader.byte_records();
    let Some(Ok(header)) = records.next() else {
        return;
    };
    let retail = RetailColumns::from_header(&header);
    let mapping: BTreeMap<String, String> = ["customer_id", "occurred_at", "total"]
        .iter()
        .zip(header.iter())
        .map(|(f, h)| {
            (
                (*f).to_owned(),
                String::from_utf8_lossy(h).trim().to_owned(),
            )
        })
        .collect();
    let generic = GenericColumns::from_header(&header, &mapping, "EUR");
    let mut rows = Vec::new();
    for rec in records.take(1000).flatten() {
        if let Ok(c) = &retail {
            let _ = c.invoice(&rec);
            if let Ok(row) = presets::retail_row(&rec, c) {
                let _ = presets::retail_row_problem(&row, None);
                rows.push(row);
            }
        }
        if let Ok(g) = &generic {
            let _ = g.order(&rec, "o-1", &[b"fuzz"]);
        }
    }
    let _ = presets::retail_order(&rows, "01J0000000000000000000FUZZ".into());
}

/// Connector configurations as the Connect REST API and `--config` files take them.
pub fn connector_config(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let name = v.get("name").and_then(Value::as_str).unwrap_or("fuzz");
    let Some(config) = v.get("config").and_then(Value::as_object) else {
        return;
    };
    if let Ok(c) = ConnectorConfig::from_json(name, config.clone()) {
        let _ = task::validate(&c, &Topics::default());
    }
}
