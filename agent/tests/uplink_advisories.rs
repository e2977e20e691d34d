//! Advisories over the wire: the real `vedetta-agent run` connects to a small stand-in
//! collector (real QUIC, real TLS, the real codec) that pushes advisories on the control
//! stream. The agent keeps them, skips the one with a garbage indicator, matches the
//! rest in a log being written (the `ioc_match` comes back in a batch), and after a
//! reconnection names the highest sequence number it holds in its hello.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vedetta_common::codec::{self, MAX_BATCH_FRAME, MAX_CONTROL_FRAME};
use vedetta_common::identity::{ALPN, SERVER_NAME, fingerprint};
use vedetta_common::protocol::{Ack, Advisories, Advisory, Message, Welcome};
use vedetta_common::{Indicator, IndicatorType, Severity, Signal, Timestamp};

/// Keys and certificates: a CA, the collector's, the agent's.
struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    agent_pem: String,
    agent_key_pem: String,
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut server);
    let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");

    let agent_key = KeyPair::generate().expect("agent key");
    let mut agent = CertificateParams::default();
    agent.distinguished_name = DistinguishedName::new();
    agent.distinguished_name.push(DnType::CommonName, "agent");
    agent.is_ca = IsCa::ExplicitNoCa;
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut agent);
    let agent_cert = agent.signed_by(&agent_key, &issuer).expect("agent cert");

    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        server_chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        agent_pem: agent_cert.pem(),
        agent_key_pem: agent_key.serialize_pem(),
    }
}

/// What the stand-in collector saw.
#[derive(Debug)]
enum Seen {
    Hello(u64),
    Signal(Box<Signal>),
}

/// Serves one connection: hello → welcome, the `push`ed advisories, acks for batches;
/// closes the connection once `close` fires.
async fn serve(
    connection: quinn::Connection,
    push: Vec<Advisories>,
    seen: mpsc::UnboundedSender<Seen>,
    close: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let Ok((mut control_send, mut control_recv)) = connection.accept_bi().await else {
        return;
    };
    let Ok(Some(Message::Hello(hello))) =
        codec::read_frame(&mut control_recv, MAX_CONTROL_FRAME).await
    else {
        panic!("no hello");
    };
    let _ = seen.send(Seen::Hello(hello.last_advisory_seq));
    let welcome = Message::Welcome(Welcome {
        org: "org-test".into(),
        agent_id: "agent-1".into(),
        collector_version: "test".into(),
        server_time: Timestamp::now(),
        max_batch_signals: 500,
    });
    codec::write_frame(&mut control_send, &welcome, MAX_CONTROL_FRAME)
        .await
        .expect("welcome");
    for frame in push {
        codec::write_frame(
            &mut control_send,
            &Message::Advisories(frame),
            MAX_CONTROL_FRAME,
        )
        .await
        .expect("advisories");
    }
    // Heartbeats are read and forgotten.
    tokio::spawn(async move {
        while let Ok(Some(_)) = codec::read_frame(&mut control_recv, MAX_CONTROL_FRAME).await {}
        drop(control_send);
    });
    let batches = {
        let connection = connection.clone();
        async move {
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let Ok(Some(Message::Batch(batch))) =
                    codec::read_frame(&mut recv, MAX_BATCH_FRAME).await
                else {
                    continue;
                };
                let accepted = batch.signals.len() as u32;
                for signal in batch.signals {
                    let _ = seen.send(Seen::Signal(Box::new(signal)));
                }
                let ack = Message::Ack(Ack {
                    seq: batch.seq,
                    accepted,
                    duplicates: 0,
                    rejected: 0,
                });
                let _ = codec::write_frame(&mut send, &ack, MAX_CONTROL_FRAME).await;
                let _ = send.finish();
            }
        }
    };
    let closing = async {
        match close {
            Some(close) => {
                let _ = close.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = batches => {}
        () = closing => connection.close(0u32.into(), b"test collector closing"),
    }
}

fn advisory(seq: u64, id: &str, kind: IndicatorType, value: &str) -> Advisory {
    Advisory {
        seq,
        id: id.into(),
        indicator: Indicator::new(kind, value),
        severity: Severity::Critical,
        description: format!("test advisory {id}"),
        published_at: Timestamp::now(),
        expires_at: Timestamp(Timestamp::now().0 + 86_400 * 1_000_000_000),
        withdrawn: false,
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_state(dir: &Path, pki: &Pki, address: std::net::SocketAddr) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    std::fs::write(state.join("agent.key"), &pki.agent_key_pem).expect("key");
    std::fs::write(state.join("agent.crt"), &pki.agent_pem).expect("crt");
    std::fs::write(state.join("ca.crt"), &pki.ca_pem).expect("ca");
    std::fs::write(
        state.join("enrollment.json"),
        serde_json::json!({
            "collector": address.to_string(),
            "org": "org-test",
            "agent_id": "agent-1",
            "ca_fingerprint": fingerprint(&pki.ca_der),
            "enrolled_at": Timestamp::now(),
        })
        .to_string(),
    )
    .expect("enrollment");
}

/// Waits (at most a minute) for what the collector saw to satisfy `wanted`.
async fn next(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    wanted: impl Fn(&Seen) -> bool,
) -> Seen {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(item)) if wanted(&item) => return item,
            Ok(Some(_)) => {}
            _ => panic!("the collector never saw {what}"),
        }
    }
}

/// Waits (at most a minute) for a log line of the agent containing `text`.
async fn wait_for_log(logs: &mut mpsc::UnboundedReceiver<String>, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, logs.recv()).await {
            Ok(Some(line)) if line.contains(text) => return line,
            Ok(Some(line)) => all.push(line),
            _ => panic!("no log line with {text:?}:\n{}", all.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_advisories_are_kept_matched_and_acknowledged_by_sequence_number() {
    let pki = pki();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_no_client_auth()
    .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
    .expect("server tls");
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().expect("address"),
    )
    .expect("endpoint");
    let address = endpoint.local_addr().expect("local address");

    let dir = tempfile::tempdir().expect("tempdir");
    write_state(dir.path(), &pki, address);
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[health]\ninterval = \"1h\"\n\
             [uplink]\nheartbeat_interval = \"1s\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\
             [[sources.logs]]\npaths = [\"{}\"]\nstart_at = \"beginning\"\n",
            log.display()
        ),
    )
    .expect("config");

    // The first connection gets four advisories in two frames: one with a garbage
    // address, one withdrawn at once.
    let mut withdrawn = advisory(4, "ADV-WIRE-4", IndicatorType::Ip, "192.0.2.4");
    withdrawn.withdrawn = true;
    let first_push = vec![
        Advisories {
            advisories: vec![
                advisory(1, "ADV-WIRE-1", IndicatorType::Ip, "203.0.113.7"),
                advisory(2, "ADV-WIRE-2", IndicatorType::Ip, "not-an-address"),
            ],
        },
        Advisories {
            advisories: vec![
                advisory(3, "ADV-WIRE-3", IndicatorType::Domain, "evil.example"),
                withdrawn,
            ],
        },
    ];
    let (seen_sender, mut seen) = mpsc::unbounded_channel();
    let (close_first, closed_first) = tokio::sync::oneshot::channel();
    let server = {
        let endpoint = endpoint.clone();
        let seen_sender = seen_sender.clone();
        tokio::spawn(async move {
            let mut pushes = vec![first_push, Vec::new()].into_iter();
            let mut closes = vec![closed_first].into_iter();
            while let Some(incoming) = endpoint.accept().await {
                let Ok(connection) = incoming.await else {
                    continue;
                };
                let push = pushes.next().unwrap_or_default();
                let close = closes.next();
                tokio::spawn(serve(connection, push, seen_sender.clone(), close));
            }
        })
    };

    let mut child = Command::new(env!("CARGO_BIN_EXE_vedetta-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent");
    let stderr = child.stderr.take().expect("stderr");
    let agent = Agent(child);
    let (log_sender, mut logs) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_sender.send(line);
        }
    });

    let Seen::Hello(first_seq) = next(&mut seen, "a hello", |s| matches!(s, Seen::Hello(_))).await
    else {
        unreachable!()
    };
    assert_eq!(first_seq, 0, "nothing held at first");
    // Both frames kept (perhaps in one merge), the garbage entry skipped alone.
    let mut received = 0;
    let mut skipped = 0;
    while received < 4 {
        let line = wait_for_log(&mut logs, "advisories received").await;
        let figure = |name: &str| -> usize {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(&format!("{name}=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        received += figure("received");
        skipped += figure("skipped");
    }
    assert_eq!(skipped, 1);
    let pushed =
        std::fs::read_to_string(dir.path().join("state/advisories.ndjson")).expect("pushed file");
    assert!(
        pushed.contains("ADV-WIRE-1") && pushed.contains("ADV-WIRE-3"),
        "{pushed}"
    );
    assert!(
        !pushed.contains("ADV-WIRE-2") && !pushed.contains("ADV-WIRE-4"),
        "{pushed}"
    );
    wait_for_log(&mut logs, "advisories reloaded").await;

    // An attempt from the advised address: the match travels back in a batch.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("log");
    writeln!(
        file,
        "{} web1 sshd[77]: Failed password for root from 203.0.113.7 port 50000 ssh2",
        Timestamp::now().to_rfc3339()
    )
    .expect("append");
    drop(file);
    let Seen::Signal(matched) = next(
        &mut seen,
        "an ioc_match",
        |s| matches!(s, Seen::Signal(signal) if signal.kind == "ioc_match"),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(matched.indicators[0].value, "203.0.113.7");
    assert_eq!(matched.severity, Severity::Critical);
    assert_eq!(
        matched.attributes.get("advisory"),
        Some(&"ADV-WIRE-1".into())
    );

    // The collector goes away and comes back: the agent asks from what it holds.
    let _ = close_first.send(());
    let Seen::Hello(again) =
        next(&mut seen, "a second hello", |s| matches!(s, Seen::Hello(_))).await
    else {
        unreachable!()
    };
    assert_eq!(
        again, 4,
        "the highest number held, withdrawn entries included"
    );

    drop(agent);
    server.abort();
    endpoint.close(0u32.into(), b"done");
}
