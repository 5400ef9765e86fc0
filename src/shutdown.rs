//! Stop requests: Ctrl-C (SIGINT) and SIGTERM, which service managers and orchestrators
//! send, both stop gracefully (the batch in hand finishes, offsets are committed, the
//! consumer group is left).

/// Resolves when the process is asked to stop.
pub(crate) async fn requested() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
