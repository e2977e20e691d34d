//! Enrollment: an agent without a certificate presents a one-time token and a certificate
//! request; the collector checks the token (hashed in the store, unused, unexpired), signs
//! a client certificate of its own design for the token's org, and records the agent, all
//! in one transaction.

use crate::ingest::{IngestContext, close};
use crate::store::{AgentRecord, Store};
use quinn::Connection;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{info, warn};
use vedetta_common::Timestamp;
use vedetta_common::codec::{self, MAX_CONTROL_FRAME};
use vedetta_common::identity::{fingerprint, hex, sha256_hex};
use vedetta_common::protocol::{EnrollRequest, EnrollResponse, ErrorCode, Message};

/// How long an enrolling client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates a new enrollment token: 32 random bytes as hex. Only its hash is stored.
pub fn new_token() -> Result<(String, String), ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    let token = format!("vdt_{}", hex(&bytes));
    let hash = hash_token(&token);
    Ok((token, hash))
}

pub fn hash_token(token: &str) -> String {
    sha256_hex(token.trim().as_bytes())
}

/// A readable agent id: the org (shortened) and eight random hex digits.
fn new_agent_id(org: &str) -> String {
    let prefix: String = org.chars().take(40).collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &random[..8])
}

pub async fn handle(context: Arc<IngestContext>, connection: Connection) {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let (send, mut recv) = connection.accept_bi().await.ok()?;
        match codec::read_frame(&mut recv, MAX_CONTROL_FRAME).await {
            Ok(Some(Message::EnrollRequest(request))) => Some((send, request)),
            _ => None,
        }
    })
    .await;
    let Ok(Some((mut send, request))) = request else {
        close(
            &connection,
            ErrorCode::ProtocolViolation,
            "expected an enrollment request",
        );
        return;
    };
    let response = enroll(&context, request).await;
    match &response {
        EnrollResponse::Accepted { org, agent_id, .. } => {
            context.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
            info!(%org, agent = %agent_id, "agent enrolled");
        }
        EnrollResponse::Refused { reason } => warn!(%reason, "enrollment refused"),
    }
    let _ = codec::write_frame(
        &mut send,
        &Message::EnrollResponse(response),
        MAX_CONTROL_FRAME,
    )
    .await;
    let _ = send.finish();
    // Let the agent read the answer and close; do not wait forever for it.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
}

async fn enroll(context: &Arc<IngestContext>, request: EnrollRequest) -> EnrollResponse {
    let EnrollRequest {
        token,
        csr_der,
        label,
    } = request;
    let label: String = label
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let signer = Arc::clone(context);
    let outcome = context
        .with_store(move |store| {
            let now = Timestamp::now();
            let mut issued = None;
            let agent = store.enroll_agent(&hash_token(&token), now, &mut |org| {
                let agent_id = new_agent_id(org);
                let certificate = signer
                    .authority
                    .sign_agent(&csr_der, org, &agent_id)
                    .map_err(|error| error.to_string())?;
                let record = AgentRecord::enrolled(
                    agent_id,
                    org.to_owned(),
                    label.clone(),
                    fingerprint(&certificate),
                    now,
                );
                issued = Some(certificate);
                Ok(record)
            })?;
            if let Ok(agent) = &agent {
                store.append_audit(&[crate::audit::NewAuditEntry::act(
                    now,
                    format!("enrollment:{}", agent.org),
                    "system",
                    "agent.enroll",
                    serde_json::json!({
                        "agent": agent.id,
                        "org": agent.org,
                        "label": agent.label,
                        "cert_fingerprint": agent.cert_fingerprint,
                    }),
                )])?;
            }
            Ok(agent.map(|agent| (agent, issued.unwrap_or_default())))
        })
        .await;
    match outcome {
        Ok(Ok((agent, certificate_der))) => EnrollResponse::Accepted {
            org: agent.org,
            agent_id: agent.id,
            certificate_der,
            ca_certificate_der: context.authority.certificate_der().to_vec(),
        },
        Ok(Err(refusal)) => EnrollResponse::Refused {
            reason: refusal.to_string(),
        },
        Err(error) => EnrollResponse::Refused {
            reason: format!("collector error: {error}"),
        },
    }
}
