//! Shared helpers of the end-to-end tests: the local stack they need, and unique names.
//!
//! Tests run against the real broker, Redis and database. When the broker is not
//! reachable, the first test that needs it runs `scripts/stack.sh up` once; if that
//! fails too, the test fails saying what is missing.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The broker address tests use (`CUSTFLOW_BROKERS`, default 127.0.0.1:9092).
pub fn brokers() -> String {
    std::env::var("CUSTFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The Redis URL tests use (`CUSTFLOW_REDIS_URL`, default redis://127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("CUSTFLOW_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Makes sure the broker answers, starting the local stack once if it does not.
pub fn ensure_stack() -> String {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let brokers = brokers();
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    let result = STARTED.get_or_init(|| {
        if reachable(&first) {
            return Ok(());
        }
        let script = repo_root().join("scripts/stack.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("up")
            .status()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if status.success() && reachable(&first) {
            Ok(())
        } else {
            Err(format!(
                "no Kafka broker at {brokers} and `scripts/stack.sh up` could not start one \
                 (see data/logs/tansu.log)"
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    brokers
}

/// The local stack with a fresh deployment under a prefix made from `label` (see
/// [`unique`]) and its topics created: the broker address and the topic names.
pub async fn deployment(label: &str) -> (String, custflow_schemas::topics::Topics) {
    let brokers = ensure_stack();
    let names = custflow_schemas::topics::Topics::new(unique(label));
    custflow_kafka::ensure_topics(&brokers, &names, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("creating the topics of {label}: {e}"));
    (brokers, names)
}

/// A name no other test run uses, for topics, groups and key prefixes.
/// A consumer of the three input topics under `names`, from the beginning, assigned
/// every partition (no group membership to wait for) and committing nothing: for reading
/// back what is on the broker.
pub fn input_reader(
    brokers: &str,
    names: &custflow_schemas::topics::Topics,
    group_prefix: &str,
) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = custflow_kafka::admin::client_config(brokers)
        .set("group.id", unique(group_prefix))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("a consumer for {brokers}: {e}"));
    let topics: Vec<String> = custflow_schemas::EventKind::ALL
        .iter()
        .map(|k| names.name(k.topic()))
        .collect();
    let parts = custflow_kafka::client::partitions_of(&consumer, &topics, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the partitions of {topics:?}: {e}"));
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, p) in &parts {
        tpl.add_partition_offset(t, *p, rdkafka::Offset::Beginning)
            .unwrap_or_else(|e| panic!("{t}/{p}: {e}"));
    }
    consumer
        .assign(&tpl)
        .unwrap_or_else(|e| panic!("assigning {topics:?}: {e}"));
    consumer
}

/// A message of [`input_reader`] decoded: its event kind (from the topic) and event.
pub fn decode_input(
    names: &custflow_schemas::topics::Topics,
    codec: &custflow_schemas::avro::AvroCodec,
    ctx: &custflow_schemas::ValidationContext,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> (custflow_schemas::EventKind, custflow_schemas::Event) {
    use rdkafka::Message;
    let kind = custflow_schemas::EventKind::ALL
        .into_iter()
        .find(|k| names.name(k.topic()) == m.topic())
        .unwrap_or_else(|| panic!("{} is not an input topic", m.topic()));
    let payload = m.payload().unwrap_or_default();
    let e = codec
        .decode(kind, payload, ctx)
        .unwrap_or_else(|e| panic!("undecodable event on {}: {e}", m.topic()));
    (kind, e)
}

/// A message read back by [`read_topic`]: headers, key, payload.
pub type TopicMessage = (
    std::collections::HashMap<String, String>,
    Option<String>,
    Vec<u8>,
);

/// Every message of a topic (all partitions) from the beginning: waits until at least
/// `min` arrived, then reads on until two polls in a row bring nothing, so extra
/// (duplicate) messages are seen too.
pub fn read_topic(topic: &str, min: usize) -> Vec<TopicMessage> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let consumer: rdkafka::consumer::BaseConsumer =
        custflow_kafka::admin::client_config(&brokers())
            .set("group.id", unique("read-topic-"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap_or_else(|e| panic!("a consumer for {topic}: {e}"));
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribing to {topic}: {e}"));
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut quiet = 0;
    while out.len() < min || quiet < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: read {} of at least {min} messages",
            out.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            quiet += 1;
            continue;
        };
        let m = match m {
            Ok(m) => m,
            // Subscribed before the topic exists (its producer starts in the
            // background): keep polling until it does.
            Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => panic!("reading {topic}: {e}"),
        };
        quiet = 0;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            headers,
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            m.payload().unwrap_or_default().to_vec(),
        ));
    }
    out
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// An optional external tool that only some machines have (for example the local Fluvio
/// cluster): its folder, from the setting `var` (README, "Optional external tools").
/// Where the setting is absent or names no folder, the calling test is skipped: this says
/// so on stderr and adds a line to the suite's skip report (`CUSTFLOW_SKIP_REPORT`, which
/// `scripts/test.sh` prints at the end), and the caller returns.
pub fn optional_tool(var: &str, test: &str, what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).map(PathBuf::from);
    if let Some(d) = dir.as_ref().filter(|d| d.is_dir()) {
        return Some(d.clone());
    }
    let why = match &dir {
        Some(d) => format!("{var}={} is not a folder", d.display()),
        None => format!("{var} is not set"),
    };
    let line = format!("SKIPPED {test}: needs {what}; {why}");
    eprintln!("{line}");
    if let Some(report) = std::env::var_os("CUSTFLOW_SKIP_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(report)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    None
}

/// A fresh membership of `role` in the deployment `prefix`, on the tests' Redis (for a
/// consumer started inside a test).
pub async fn member(prefix: &str, role: &str) -> custflow_feature_store::members::Member {
    let conn = custflow_feature_store::conn::Redis::connect(
        &redis_url(),
        custflow_feature_store::conn::Timeouts::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("Redis at {}: {e}", redis_url()));
    custflow_feature_store::members::Member::new(conn, prefix, role, None)
}

/// The repository's reference data folder (`testdata/`, see its README).
pub fn reference_data() -> PathBuf {
    repo_root().join("testdata")
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 200 ms until it gives a value, for at most `secs` seconds: the
/// synchronous twin of [`wait_until`], for tests that run no runtime.
pub fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `routes` with no API keys configured (a developer's loopback server).
pub fn open(routes: custflow_http::routes::Routes) -> axum::Router {
    routes.into_router(custflow_http::auth::Access::open())
}

/// Serves `app` on a free loopback port until the test ends; its address.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a test server: {e}"));
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|e| panic!("the test server's address: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A minimal HTTP/1.0 client for tests against a real bound port: (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    // A refused connection is tried again for a few seconds: a probe that found the port
    // open can have met itself (a loopback connect from an ephemeral port equal to the
    // target port, before the server bound it), and the server is then still starting.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connecting to {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(body))
        .unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The stored states of `ids` under `keys` (None for customers without one).
pub async fn read_states(
    keys: &custflow_feature_store::keys::Keys,
    ids: &[String],
) -> Vec<Option<custflow_feature_store::state::CustomerState>> {
    read_states_at(&redis_url(), keys, ids).await
}

/// [`read_states`] from the Redis at `url`.
pub async fn read_states_at(
    url: &str,
    keys: &custflow_feature_store::keys::Keys,
    ids: &[String],
) -> Vec<Option<custflow_feature_store::state::CustomerState>> {
    let mut conn = redis_conn_at(url).await;
    let keys = keys.clone().in_cluster(conn.is_cluster());
    let mut out = Vec::new();
    for chunk in ids.chunks(1000) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let raw = custflow_feature_store::keys::read_states(&mut conn, &keys, &chunk)
            .await
            .unwrap_or_else(|e| panic!("reading states: {e}"));
        out.extend(raw.into_iter().map(|b| {
            b.map(|b| {
                custflow_feature_store::state::CustomerState::decode(&b)
                    .unwrap_or_else(|e| panic!("unreadable state: {e}"))
            })
        }));
    }
    out
}

/// A connection to the test stack's Redis.
pub async fn redis_conn() -> custflow_feature_store::conn::Redis {
    redis_conn_at(&redis_url()).await
}

/// A connection to the Redis (or Redis Cluster) at `url`.
pub async fn redis_conn_at(url: &str) -> custflow_feature_store::conn::Redis {
    custflow_feature_store::conn::Redis::connect(url, Default::default())
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is needed (scripts/stack.sh up): {e}"))
}

/// The state of a customer who placed one order of `value` on each of `days`, applied
/// at offsets 0, 1, … of one partition.
pub fn state_with_orders(
    id: &str,
    days: &[i64],
    value: f64,
) -> custflow_feature_store::state::CustomerState {
    let mut state = custflow_feature_store::state::CustomerState::default();
    for (k, &day) in days.iter().enumerate() {
        let e = custflow_schemas::Event::Order(placed_order(
            format!("{id}-e{k}"),
            format!("{id}-o{k}"),
            id,
            day,
            value,
        ));
        let pos = custflow_feature_store::state::SourcePos {
            topic: 1,
            partition: 0,
            offset: k as i64,
        };
        state
            .apply(&e, pos)
            .unwrap_or_else(|e| panic!("applying an order: {e}"));
    }
    state
}

/// A model job under a fresh key prefix with its own metrics, on the real Redis, with
/// the promotion `rule` and drift threshold given.
pub async fn model_job(
    prefix: &str,
    rule: custflow_models::promotion::PromotionRule,
    drift_threshold: f64,
    churn: custflow_processors::model_job::ChurnMonitoring,
) -> custflow_processors::model_job::ModelJob {
    let conn = redis_conn().await;
    let keys = custflow_feature_store::keys::Keys::new(unique(prefix));
    // The tests write the states themselves: the features count as built.
    let () = redis::cmd("SET")
        .arg(keys.state_ready())
        .arg("1")
        .query_async(&mut conn.clone())
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is needed: {e}", redis_url()));
    custflow_processors::model_job::ModelJob {
        conn,
        keys,
        model: Default::default(),
        at_risk_days: 45.0,
        sample_max: 10_000,
        seed: 7,
        rule,
        drift_threshold,
        metrics: std::sync::Arc::default(),
        churn,
    }
}

/// A promotion rule no likelihood-ratio test passes: only drift (and the first model)
/// promote.
pub fn drift_only() -> custflow_models::promotion::PromotionRule {
    custflow_models::promotion::PromotionRule {
        level: 0.0,
        ..Default::default()
    }
}

/// A promotion rule every refit that fits no worse passes.
pub fn always_promote() -> custflow_models::promotion::PromotionRule {
    custflow_models::promotion::PromotionRule {
        level: 1.0,
        min_changed_share: 0.0,
        min_clv_shift: 0.0,
    }
}

/// Deletes every customer state under `keys`.
pub async fn delete_customers(
    conn: &mut custflow_feature_store::conn::Redis,
    keys: &custflow_feature_store::keys::Keys,
) {
    let mut scan = custflow_feature_store::conn::Scan::new(conn, &keys.features_pattern(), 1000)
        .await
        .unwrap_or_else(|e| panic!("scanning: {e}"));
    while let Some(found) = scan
        .next_page(conn)
        .await
        .unwrap_or_else(|e| panic!("scanning: {e}"))
    {
        if !found.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&found)
                .query_async(conn)
                .await
                .unwrap_or_else(|e| panic!("deleting: {e}"));
        }
    }
}

/// A server-sent event as a test reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An open server-sent event stream on a real bound port (HTTP/1.0, so the body is not
/// chunked).
pub struct SseStream {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
    pub status: u16,
}

impl SseStream {
    /// Sends `GET path` with `headers` and reads the response head.
    pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
        let mut reader = tokio::io::BufReader::new(s);
        let mut status = 0;
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await.unwrap_or(0);
            if status == 0 {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            }
            if n == 0 || line == "\r\n" {
                break;
            }
        }
        Self { reader, status }
    }

    /// The rest of the body as text (for error responses).
    pub async fn body(mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        self.reader.read_to_string(&mut text).await.ok();
        text
    }

    /// The next event (comments skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        use tokio::io::AsyncBufReadExt;
        let mut ev = SseEvent::default();
        let mut seen = false;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    return Some(ev);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => ev.event = value.to_owned(),
                "id" => ev.id = Some(value.to_owned()),
                "data" => ev.data.push_str(value),
                _ => continue,
            }
            seen = true;
        }
    }
}

/// A placed order at noon UTC of `day` (days since the epoch), in EUR, without items,
/// location or discount; set other fields with struct update syntax.
pub fn placed_order(
    event_id: String,
    order_id: String,
    customer_id: &str,
    day: i64,
    total: f64,
) -> custflow_schemas::Order {
    custflow_schemas::Order {
        event_id,
        order_id,
        customer_id: customer_id.to_owned(),
        occurred_at: day * custflow_schemas::time::DAY_MS + 12 * 3_600_000,
        status: custflow_schemas::OrderStatus::Placed,
        location_id: None,
        channel: None,
        currency: "EUR".into(),
        items: vec![],
        discount_code: None,
        discount_amount: 0.0,
        total,
    }
}

/// Produces scores to `topic` as the processors do (Confluent-framed Avro, keyed by
/// customer, so one customer's scores stay in order), waiting for every acknowledgement.
pub async fn produce_scores(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    scores: &[custflow_schemas::CustomerScore],
) {
    use custflow_schemas::avro;
    let sends = scores.iter().map(|s| {
        let payload = avro::frame(
            1,
            &avro::encode_record("CustomerScore", s)
                .unwrap_or_else(|e| panic!("encoding a score: {e}")),
        );
        let key = s.customer_id.clone();
        async move {
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(topic)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        }
    });
    futures::future::join_all(sends).await;
}

/// A TCP proxy in front of a service (PostgreSQL, Redis) that the test can cut or stall.
/// Down: it drops every open connection and closes new ones at once, as a service that
/// went away does. Stalled: connections stay open but no byte passes either way until it
/// is up again, as a hung server or a black-holed network does.
pub struct Proxy {
    pub port: u16,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Up,
    Down,
    Stalled,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (mode, _) = tokio::sync::watch::channel(ProxyMode::Up);
        let links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            std::sync::Arc::default();
        let (mode2, links2, target) = (mode.clone(), links.clone(), target.to_owned());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if *mode2.borrow() == ProxyMode::Down {
                    continue; // dropped: the client sees the connection closed
                }
                let (target, rx) = (target.clone(), mode2.subscribe());
                let link = tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, rx.clone()), pump(ro, wi, rx));
                });
                if let Ok(mut l) = links2.lock() {
                    l.push(link);
                }
            }
        });
        Self { port, mode, links }
    }

    /// Drops every connection and refuses new ones.
    pub fn down(&self) {
        self.mode.send_replace(ProxyMode::Down);
        if let Ok(mut l) = self.links.lock() {
            for link in l.drain(..) {
                link.abort();
            }
        }
    }

    /// Holds every byte until [`Proxy::up`].
    pub fn stall(&self) {
        self.mode.send_replace(ProxyMode::Stalled);
    }

    pub fn up(&self) {
        self.mode.send_replace(ProxyMode::Up);
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mode.wait_for(|m| *m != ProxyMode::Stalled).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
