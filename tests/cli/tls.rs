//! Transport security to Redis: `custflow serve --redis rediss://…` against a local
//! redis-server that speaks only TLS, with certificates from a throwaway CA. It serves
//! when the CA is trusted (`SSL_CERT_FILE`) and refuses to start when it is not.

use std::path::Path;
use std::process::Command;

use crate::{free_port, get, Helper, Server};

/// Runs a command that must succeed.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for localhost signed by it: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(dir).args(args));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=custflow test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

/// A redis-server listening only with TLS on `port`, stopped when dropped.
fn tls_redis(dir: &Path, port: u16) -> Helper {
    Helper::listening(
        Command::new("redis-server")
            .current_dir(dir)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"]),
        port,
    )
}

#[test]
fn serve_talks_tls_to_redis_and_refuses_an_untrusted_server() {
    custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("tls-");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = free_port();
    let _redis = tls_redis(&dir, port);
    let url = format!("rediss://localhost:{port}");
    let ca = dir.join("ca.pem");

    // Trusted: Redis answers PING over TLS, and lookups read through it (the features are
    // not built, no processor runs: Redis answered that).
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with_env(
        &["serve", "--topic-prefix", &prefix, "--redis", &url],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
        &addr,
        "/healthz",
    );
    let (_, body) = get(&addr, "/readyz");
    assert!(body.contains("\"redis\":true"), "{body}");
    let (status, body) = get(&addr, "/v1/customers/nobody/features");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("being built"), "{body}");
    drop(server);

    // Not trusted (the system's CAs only): it does not start.
    let addr = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args([
            "serve",
            "--topic-prefix",
            &prefix,
            "--redis",
            &url,
            "--http",
            &addr,
        ])
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
