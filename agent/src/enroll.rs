//! `vedetta-agent enroll`: make a key pair here (the private key never leaves the host),
//! ask the collector for a certificate over a connection that pins its CA by fingerprint,
//! and keep the result in the state directory.

use crate::state::{Enrollment, StatePaths};
use crate::tls;
use anyhow::{Context as _, bail};
use rcgen::{CertificateParams, KeyPair};
use std::net::SocketAddr;
use std::time::Duration;
use vedetta_common::Timestamp;
use vedetta_common::codec::{self, MAX_CONTROL_FRAME};
use vedetta_common::files::{create_private_dir, write_atomic, write_private};
use vedetta_common::identity::{SERVER_NAME, fingerprint, normalize_fingerprint};
use vedetta_common::protocol::{EnrollRequest, EnrollResponse, Message};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// Resolves `HOST:PORT`, preferring the first address the resolver returns.
pub async fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| {
            format!("cannot resolve collector address {address:?} (expected HOST:PORT)")
        })?
        .next()
        .with_context(|| format!("collector address {address:?} resolves to nothing"))
}

/// Enrolls this agent; returns what was recorded.
pub async fn enroll(
    paths: &StatePaths,
    collector: &str,
    token: &str,
    ca_fingerprint: &str,
    label: &str,
) -> anyhow::Result<Enrollment> {
    let pin = normalize_fingerprint(ca_fingerprint).map_err(anyhow::Error::msg)?;
    if paths.certificate.exists() || paths.key.exists() {
        bail!(
            "this agent is already enrolled ({} exists); to enroll again, stop the agent and remove {} and {}",
            paths.certificate.display(),
            paths.key.display(),
            paths.certificate.display()
        );
    }
    create_private_dir(&paths.dir).with_context(|| format!("creating {}", paths.dir.display()))?;

    let key = KeyPair::generate().context("generating the agent key")?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .context("creating the certificate request")?;

    let remote = resolve(collector).await?;
    let mut endpoint = tls::client_endpoint(remote)?;
    endpoint.set_default_client_config(tls::enrollment_client(pin.clone())?);
    let response = tokio::time::timeout(ENROLL_TIMEOUT, async {
        let connection = endpoint
            .connect(remote, SERVER_NAME)?
            .await
            .with_context(|| format!("cannot reach the collector at {remote}"))?;
        let (mut send, mut recv) = connection.open_bi().await?;
        let request = Message::EnrollRequest(EnrollRequest {
            token: token.trim().to_owned(),
            csr_der: csr.der().to_vec(),
            label: label.to_owned(),
        });
        codec::write_frame(&mut send, &request, MAX_CONTROL_FRAME).await?;
        send.finish()?;
        let answer = codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await?;
        connection.close(0u32.into(), b"enrolled");
        anyhow::Ok(answer)
    })
    .await
    .context("enrollment timed out")??;
    endpoint.wait_idle().await;

    let (org, agent_id, certificate, ca) = match response {
        Some(Message::EnrollResponse(EnrollResponse::Accepted {
            org,
            agent_id,
            certificate_der,
            ca_certificate_der,
        })) => (org, agent_id, certificate_der, ca_certificate_der),
        Some(Message::EnrollResponse(EnrollResponse::Refused { reason })) => {
            bail!("the collector refused enrollment: {reason}")
        }
        other => bail!("unexpected answer to enrollment: {other:?}"),
    };
    if fingerprint(&ca) != pin {
        bail!("the collector returned a CA that does not match the pinned fingerprint");
    }
    let pem = |label: &str, der: &[u8]| pem::encode(&pem::Pem::new(label, der.to_vec()));
    write_private(&paths.key, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", paths.key.display()))?;
    write_atomic(
        &paths.certificate,
        pem("CERTIFICATE", &certificate).as_bytes(),
        0o644,
    )?;
    write_atomic(
        &paths.ca_certificate,
        pem("CERTIFICATE", &ca).as_bytes(),
        0o644,
    )?;
    let enrollment = Enrollment {
        collector: collector.to_owned(),
        org,
        agent_id,
        ca_fingerprint: pin,
        enrolled_at: Timestamp::now(),
    };
    write_atomic(
        &paths.enrollment,
        serde_json::to_string_pretty(&enrollment)?.as_bytes(),
        0o644,
    )?;
    Ok(enrollment)
}
