//! Who may talk to the collector, and what happens to those who may not or who send
//! garbage: real binaries, real QUIC, real certificates.

use vedetta_common::protocol::ErrorCode;
use vedetta_e2e::raw::{client, closed_by_collector, connect, runtime};
use vedetta_e2e::{
    Agent, Collector, assert_stored_once, collector_and_agent, rss_kib, test_signals, wait_until,
};

const KIND: &str = "e2e_test";

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
    let (mut collector, mut agent) = collector_and_agent("");
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

#[test]
fn stalled_frames_and_oversized_batches_hold_no_memory_while_honest_agents_deliver() {
    use vedetta_common::codec::MAX_BATCH_FRAME;
    use vedetta_common::protocol::{Batch, MAX_BATCH_SIGNALS, Message};
    use vedetta_e2e::raw::connect_as;

    let (mut collector, mut honest) = collector_and_agent("");
    honest.start();
    let hostile = Agent::enrolled(&collector, "acme", "");
    let rss_before = rss_kib(collector.pid());
    let runtime = runtime();

    // Every stream the collector allows on a connection announces a full 4 MiB frame and
    // then stalls after 1 KiB.
    let (stalling, _streams) = runtime.block_on(async {
        let connection = connect_as(&collector, &hostile).await;
        let mut streams = Vec::new();
        for _ in 0..16 {
            let (mut send, recv) = connection.open_bi().await.expect("stream");
            let mut bytes = (MAX_BATCH_FRAME as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[7u8; 1024]);
            send.write_all(&bytes).await.expect("write");
            streams.push((send, recv));
        }
        (connection, streams)
    });
    // The honest agent is served meanwhile.
    let signals = test_signals(300, KIND);
    honest.emit(&signals).expect("emit");
    wait_until("honest signals stored during the stall", || {
        collector.signals_of_kind(KIND).len() >= signals.len()
    });
    let rss_during = rss_kib(collector.pid());
    assert!(
        rss_during < rss_before + 32 * 1024,
        "stalled frames cost {} KiB",
        rss_during.saturating_sub(rss_before)
    );

    // A batch of one signal more than the protocol allows, each signal tiny: refused while
    // decoding, and only that connection is closed.
    let oversized = runtime.block_on(async {
        drop(stalling);
        let connection = connect_as(&collector, &hostile).await;
        let (mut send, _recv) = connection.open_bi().await.expect("stream");
        let batch = Message::Batch(Batch {
            seq: 1,
            signals: test_signals(MAX_BATCH_SIGNALS + 1, "flood"),
        });
        let frame =
            vedetta_common::codec::encode_frame(&batch, MAX_BATCH_FRAME).expect("fits a frame");
        send.write_all(&frame).await.expect("write");
        let _ = send.finish();
        closed_by_collector(&connection).await
    });
    assert_eq!(
        oversized.0,
        Some(ErrorCode::ProtocolViolation),
        "{}",
        oversized.1
    );
    assert!(oversized.1.contains("more than"), "{}", oversized.1);
    assert!(collector.signals_of_kind("flood").is_empty());
    assert_stored_once(&collector.signals_of_kind(KIND), &signals);
    assert!(honest.stop());
    collector.stop();
}
