//! Who may talk to the collector, and what happens to those who may not or who send
//! garbage: real binaries, real QUIC, real certificates.

use quinn::ConnectionError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use vedetta_common::identity::{ALPN, SERVER_NAME};
use vedetta_common::protocol::ErrorCode;
use vedetta_e2e::{Agent, Collector, assert_stored_once, rss_kib, test_signals, wait_until};

const KIND: &str = "e2e_test";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pem_certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("read certificates")
        .collect::<Result<_, _>>()
        .expect("parse certificates")
}

/// A client that trusts `ca` and presents `identity` (certificate chain and key), if any.
fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> quinn::ClientConfig {
    let ca = pem_certificates(ca).remove(0);
    match identity {
        Some((certificate, key)) => vedetta_agent::tls::session_client(
            ca,
            pem_certificates(certificate),
            PrivateKeyDer::from_pem_file(key).expect("key"),
        )
        .expect("client config"),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).expect("root");
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("tls13")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![ALPN.to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
            quinn::ClientConfig::new(std::sync::Arc::new(crypto))
        }
    }
}

async fn connect(
    address: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Connection, ConnectionError> {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(config);
    endpoint
        .connect(address, SERVER_NAME)
        .expect("connect")
        .await
}

/// Waits for the collector to close `connection` and returns the close code and reason.
async fn closed_by_collector(connection: &quinn::Connection) -> (Option<ErrorCode>, String) {
    let error = tokio::time::timeout(Duration::from_secs(30), connection.closed())
        .await
        .expect("collector closes the connection");
    match error {
        ConnectionError::ApplicationClosed(close) => (
            ErrorCode::from_close_code(close.error_code.into_inner()),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => (None, other.to_string()),
    }
}

#[test]
fn enrollment_refuses_reused_and_expired_tokens_and_a_wrong_ca_fingerprint() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let address = collector.address.expect("address");

    let wrong_pin = "ab".repeat(32);
    let agent = Agent::configure("");
    let error = agent
        .try_enroll(address, &collector.token("acme"), &wrong_pin)
        .expect_err("wrong fingerprint refused");
    assert!(error.contains("pinned fingerprint"), "{error}");
    assert!(
        !agent.state_dir().join("agent.key").exists(),
        "no key kept after a failure"
    );

    let token = collector.token("acme");
    Agent::configure("")
        .try_enroll(address, &token, &collector.fingerprint)
        .expect("first use");
    let error = Agent::configure("")
        .try_enroll(address, &token, &collector.fingerprint)
        .expect_err("reuse refused");
    assert!(error.contains("already used"), "{error}");

    let expired = collector
        .cli(&["token", "create", "--org", "acme", "--ttl", "0s"])
        .expect("token");
    let error = Agent::configure("")
        .try_enroll(address, &expired, &collector.fingerprint)
        .expect_err("expired refused");
    assert!(error.contains("expired"), "{error}");

    let error = Agent::configure("")
        .try_enroll(address, "vdt_forged", &collector.fingerprint)
        .expect_err("unknown refused");
    assert!(error.contains("unknown enrollment token"), "{error}");

    // The key never left the host and is readable by its owner only.
    let agent = Agent::enrolled(&collector, "acme", "");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.state_dir().join("agent.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for key in ["ca.key", "server.key", "vedetta.db"] {
        let mode = std::fs::metadata(collector.data_dir.join(key))
            .expect(key)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let agents = collector
        .cli(&["agent", "list", "--format", "json"])
        .expect("list");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&agents)
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    collector.stop();
}

#[test]
fn connections_without_a_valid_certificate_are_refused_with_a_reason() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let address = collector.address.expect("address");
    let ca = collector.data_dir.join("ca.crt");

    // Another collector's CA signs a perfectly formed agent certificate.
    let mut other = Collector::init();
    other.add_org("acme");
    other.start();
    let foreign = Agent::enrolled(&other, "acme", "");
    other.stop();

    runtime().block_on(async {
        let connection = connect(address, client(&ca, None))
            .await
            .expect("TLS handshake");
        let (code, reason) = closed_by_collector(&connection).await;
        assert_eq!(code, Some(ErrorCode::Unauthenticated));
        assert!(reason.contains("client certificate required"), "{reason}");

        let state = foreign.state_dir();
        let refused = connect(
            address,
            client(
                &ca,
                Some((&state.join("agent.crt"), &state.join("agent.key"))),
            ),
        )
        .await;
        // With TLS 1.3 the client may finish its side of the handshake before the
        // collector checks its certificate; either way the collector refuses it in TLS.
        let reason = match refused {
            Err(error) => error.to_string(),
            Ok(connection) => {
                let (code, reason) = closed_by_collector(&connection).await;
                assert_eq!(code, None, "refused by TLS, not after: {reason}");
                reason
            }
        };
        assert!(
            reason.contains("invalid peer certificate: UnknownIssuer"),
            "{reason}"
        );
    });
    collector.stop();
}

#[test]
fn a_revoked_agent_is_disconnected_at_once_and_refused_from_then_on() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let mut agent = Agent::enrolled(&collector, "acme", "");
    agent.start();
    let before = test_signals(10, KIND);
    agent.emit(&before).expect("emit");
    wait_until("first signals stored", || {
        collector.signals_of_kind(KIND).len() == 10
    });

    let id = agent.agent_id();
    collector.cli(&["agent", "revoke", &id]).expect("revoke");
    wait_until("agent told it is revoked", || {
        let status = agent.status();
        status["uplink"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked"))
    });
    agent.emit(&test_signals(10, KIND)).expect("emit");
    // The agent keeps retrying and keeps being refused: nothing new is stored. Wait for a
    // refusal that happened after the new signals were spooled.
    let since = agent.status()["uplink"]["since"].clone();
    wait_until("a later refusal", || {
        let status = agent.status();
        status["uplink"]["since"] != since
            && status["uplink"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("revoked"))
    });
    assert_stored_once(&collector.signals_of_kind(KIND), &before);
    let list = collector.cli(&["agent", "list"]).expect("list");
    assert!(list.contains("revoked"), "{list}");
    assert!(agent.stop());
    collector.stop();
}

#[test]
fn garbage_frames_close_only_that_connection_and_memory_stays_flat() {
    let mut collector = Collector::init();
    collector.add_org("acme");
    collector.start();
    let address = collector.address.expect("address");
    let mut honest = Agent::enrolled(&collector, "acme", "");
    honest.start();
    let hostile = Agent::enrolled(&collector, "acme", "");
    let state = hostile.state_dir();
    let ca = collector.data_dir.join("ca.crt");
    let rss_before = rss_kib(collector.pid());

    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        ("a truncated frame", {
            let frame = vedetta_common::codec::encode_frame(
                &vedetta_common::protocol::Message::Batch(vedetta_common::protocol::Batch {
                    seq: 1,
                    signals: test_signals(10, KIND),
                }),
                vedetta_common::codec::MAX_BATCH_FRAME,
            )
            .expect("frame");
            frame[..frame.len() / 2].to_vec()
        }),
        (
            "a frame announcing 4 GiB",
            vec![0xff, 0xff, 0xff, 0xfe, 0, 1, 2, 3],
        ),
    ];
    runtime().block_on(async {
        for (name, bytes) in &attacks {
            let connection = connect(
                address,
                client(
                    &ca,
                    Some((&state.join("agent.crt"), &state.join("agent.key"))),
                ),
            )
            .await
            .expect("hostile agent has a valid certificate");
            let (mut send, _recv) = connection.open_bi().await.expect("stream");
            let _ = send.write_all(bytes).await;
            let _ = send.finish();
            let (code, reason) = closed_by_collector(&connection).await;
            assert_eq!(code, Some(ErrorCode::ProtocolViolation), "{name}: {reason}");
        }
    });
    // The collector still serves the honest agent.
    let signals = test_signals(200, KIND);
    honest.emit(&signals).expect("emit");
    wait_until("honest signals stored", || {
        collector.signals_of_kind(KIND).len() >= 200
    });
    assert_stored_once(&collector.signals_of_kind(KIND), &signals);
    let rss_after = rss_kib(collector.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "collector memory jumped from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(honest.stop());
    collector.stop();
}
