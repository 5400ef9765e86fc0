//! Redis restart: a private redis-server (keeping nothing on disk, like the stack's) is
//! killed and started empty under a running processor. The processor notices the lost
//! state by the partition markers and replays the input topics from the start; until it
//! has, `/readyz` answers 503 and lookups answer 503 or what they answered before, never
//! a 404 or a partial feature set; afterwards every customer's features equal a
//! recomputation from the topics, including the events produced meanwhile.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use custflow_schemas::time::DAY_MS;

use crate::crash::{assert_same, counter, deployment, spawn_with};
use crate::{free_port, get, Helper, Server};

/// A redis-server on `port` with persistence off, killed (SIGKILL) when dropped.
fn redis_server(port: u16) -> Helper {
    Helper::listening(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]),
        port,
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_noticed_and_rebuilt_from_the_topics() {
    const FIRST: usize = 20_000;
    const ALL: usize = 30_000;
    let _turn = crate::HEAVY.lock().await;
    let port = free_port();
    let redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}");

    let mut d = deployment("redis-restart-", 5, 8_000, ALL).await;
    let later = d.events.split_off(FIRST);
    d.produce(5_000, Duration::ZERO).await.unwrap();

    // The processor and the API as separate processes, so the processor can be paused.
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut processor = spawn_with(&d.prefix, &d.brokers, &metrics, &["--redis", &url]);
    let api = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &[
            "serve",
            "--topic-prefix",
            &d.prefix,
            "--brokers",
            &d.brokers,
            "--redis",
            &url,
        ],
        &api,
        "/healthz",
    );
    let (_, ids, _) = d.applied_in(FIRST, &url).await;
    // Ready once the processor marked every partition built.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&api, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "/readyz not 200 within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A customer the later events do not touch: its answer must not change.
    let probe = ids
        .iter()
        .find(|id| !later.iter().any(|e| e.customer_id() == id.as_str()))
        .expect("a customer without later events");
    let lookup = format!("/v1/customers/{probe}/features?as_of={}", d.now + DAY_MS);
    let (code, before) = get(&api, &lookup);
    assert_eq!(code, 200, "{before}");

    // Redis dies and comes back empty while the processor is paused.
    signal(&processor, "-STOP");
    drop(redis);
    let _redis = redis_server(port);
    let (code, body) = get(&api, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"features\":false"), "{body}");
    let (code, body) = get(&api, &lookup);
    assert_eq!(code, 503, "a lookup on the emptied Redis answered: {body}");

    // More events, then the processor resumes and must notice.
    d.events = later;
    d.produce(5_000, Duration::ZERO).await.unwrap();
    signal(&processor, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut unavailable = 0;
    loop {
        let (code, body) = get(&api, &lookup);
        match code {
            503 => unavailable += 1,
            200 => assert_eq!(body, before, "a lookup during the rebuild differs"),
            _ => panic!("a lookup during the rebuild answered {code}: {body}"),
        }
        if get(&api, "/readyz").0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready 5 minutes after");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unavailable > 0, "no lookup saw the rebuild");

    // Everything, the events before and during the outage, applied exactly once.
    let (reference, ids, states) = d.applied_in(ALL, &url).await;
    assert_same(&reference, &ids, &states, d.now + DAY_MS);
    assert_eq!(get(&api, &lookup), (200, before));
    assert!(counter(&metrics, "custflow_state_resets_total") > 0);
    processor.kill().unwrap();
    processor.wait().unwrap();
    server.stop();
}

/// A partition taken over while another instance was rebuilding it, with nothing left to
/// read (that instance had consumed and committed to the end before it went away): the
/// new owner marks it built from its committed offsets, instead of waiting for a message
/// that a quiet topic may never bring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_rebuild_with_nothing_left_to_read_becomes_ready() {
    const N: usize = 5_000;
    let url = custflow_tests::redis_url();
    let mut d = deployment("takeover-", 11, 1_000, N).await;
    d.produce(5_000, Duration::ZERO).await.unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut first = spawn_with(&d.prefix, &d.brokers, &metrics, &["--redis", &url]);
    let (reference, _, _) = d.applied_in(N, &url).await;
    // A graceful stop commits the offsets at the end of every partition.
    signal(&first, "-TERM");
    assert!(first.wait().unwrap().success());

    // Every partition as another instance left it: being rebuilt, nothing ready.
    let keys = custflow_feature_store::keys::Keys::new(d.prefix.clone());
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for p in 0..custflow_schemas::topics::ALL[0].partitions {
        pipe.set(keys.partition_state(p), "rebuilding:gone")
            .ignore();
    }
    pipe.del(keys.state_ready()).ignore();
    let () = pipe.query_async(&mut conn).await.unwrap();

    // The same instance id takes the partitions back at once; no event is produced.
    let mut second = spawn_with(&d.prefix, &d.brokers, &metrics, &["--redis", &url]);
    let ready = keys.state_ready();
    custflow_tests::wait_until(
        Duration::from_secs(60),
        "the partitions marked ready",
        || {
            let (ready, mut conn) = (ready.clone(), conn.clone());
            async move {
                let set: bool = redis::cmd("EXISTS")
                    .arg(&ready)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                set.then_some(())
            }
        },
    )
    .await;
    // Nothing was replayed on top of the states.
    let (_, ids, states) = d.applied_in(N, &url).await;
    assert_same(&reference, &ids, &states, d.now + DAY_MS);
    second.kill().unwrap();
    second.wait().unwrap();
}
