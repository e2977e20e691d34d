//! The messages agents and the collector exchange. Every frame carries
//! [`PROTOCOL_VERSION`]; see [`crate::codec`] for how frames become bytes.
//!
//! Streams (QUIC, ALPN [`crate::identity::ALPN`]):
//! * the agent opens one *control* stream per connection: `Hello` → `Welcome`, then
//!   `Heartbeat`s from the agent and `Advisories` from the collector (first everything
//!   the agent missed, by sequence number, then each new one as it is published);
//! * each signal batch travels on its own bidirectional stream: `Batch` → `Ack`, the
//!   ack sent only after the batch is durably committed.
//!
//! Enrollment uses ALPN [`crate::identity::ALPN_ENROLL`] on a server-authenticated
//! connection: one stream, `EnrollRequest` → `EnrollResponse`.

use crate::signal::{Indicator, Severity, Signal, Timestamp};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u16 = 1;
/// The most signals a batch may carry on the wire (a collector may accept fewer: it says
/// how many in [`Welcome::max_batch_signals`]).
pub const MAX_BATCH_SIGNALS: usize = 5_000;
/// The most sources a heartbeat may report errors for.
pub const MAX_HEARTBEAT_SOURCES: usize = 64;
/// The most advisories one `Advisories` frame carries (a catch-up takes several frames).
pub const MAX_ADVISORIES_PER_FRAME: usize = 256;
/// The longest advisory description, in bytes; longer ones are cut by the collector.
pub const MAX_ADVISORY_TEXT: usize = 512;

/// Everything that can be said on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Heartbeat(Heartbeat),
    Batch(Batch),
    Ack(Ack),
    EnrollRequest(EnrollRequest),
    EnrollResponse(EnrollResponse),
    /// A refusal with a reason a person can act on, sent before closing.
    Error(ErrorMessage),
    /// Indicators of compromise published by the operations centre (collector → agent).
    /// Last, so that the numbering of the older variants on the wire is unchanged.
    Advisories(Advisories),
}

impl Message {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Welcome(_) => "welcome",
            Self::Heartbeat(_) => "heartbeat",
            Self::Batch(_) => "batch",
            Self::Ack(_) => "ack",
            Self::EnrollRequest(_) => "enroll_request",
            Self::EnrollResponse(_) => "enroll_response",
            Self::Advisories(_) => "advisories",
            Self::Error(_) => "error",
        }
    }
}

/// First message of the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub agent_version: String,
    /// The highest advisory sequence number the agent holds, so that the collector can
    /// send what it missed while offline.
    pub last_advisory_seq: u64,
}

/// The collector's answer to `Hello`: who it believes the agent is (from the certificate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub org: String,
    pub agent_id: String,
    pub collector_version: String,
    pub server_time: Timestamp,
    /// The largest batch this collector accepts; agents form no larger ones.
    pub max_batch_signals: u32,
}

/// The agent's periodic sign of life and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent_version: String,
    pub uptime_s: u64,
    pub spool_depth: u64,
    pub drops_total: u64,
    /// Errors per source since the agent started (`("logs:/var/log/auth.log", 3)`).
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_HEARTBEAT_SOURCES>")]
    pub source_errors: Vec<(String, u64)>,
    pub sent_at: Timestamp,
    /// What the host is (sent when the agent has looked; refreshed rarely).
    pub inventory: Option<HostInventory>,
}

/// The host an agent runs on. No host name: the agent's signals carry its pseudonym.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    /// Distribution and version (`Debian GNU/Linux 12`).
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_mib: u64,
}

/// Advisories in increasing sequence order. An agent keeps the highest `seq` it holds and
/// names it in its next `Hello`, so that nothing published while it was away is missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisories {
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_ADVISORIES_PER_FRAME>")]
    pub advisories: Vec<Advisory>,
}

/// One indicator of compromise and what the operations centre says of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// Position in the collector's feed: strictly increasing, never reused. A change of
    /// an advisory (withdrawal) is sent again under a new number.
    pub seq: u64,
    /// The advisory's public identifier (`ADV-…`), quoted by the agent's `ioc_match`.
    pub id: String,
    pub indicator: Indicator,
    pub severity: Severity,
    pub description: String,
    pub published_at: Timestamp,
    /// After this the agent stops matching it.
    pub expires_at: Timestamp,
    /// Withdrawn by an analyst (a false positive): the agent forgets it.
    pub withdrawn: bool,
}

/// A batch of signals with the agent's batch sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_BATCH_SIGNALS>")]
    pub signals: Vec<Signal>,
}

/// Sent only after the batch is committed. `duplicates` were already stored (a resend);
/// `rejected` failed validation and will never be stored, so resending them is useless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
    pub accepted: u32,
    pub duplicates: u32,
    pub rejected: u32,
}

/// A request for a client certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The one-time enrollment token created by an admin.
    pub token: String,
    /// PKCS#10 request made with a key generated on the agent's host.
    pub csr_der: Vec<u8>,
    /// A label for people (`agent list`), e.g. the host name; not an identity.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EnrollResponse {
    Accepted {
        org: String,
        agent_id: String,
        certificate_der: Vec<u8>,
        ca_certificate_der: Vec<u8>,
    },
    Refused {
        reason: String,
    },
}

/// Refusal codes, also used as QUIC application close codes.
///
/// `BatchRefused` is answered on a batch's own stream (the connection stays up): the
/// agent must not send that batch again as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    ProtocolViolation,
    Unauthenticated,
    Revoked,
    UnsupportedVersion,
    Overloaded,
    ShuttingDown,
    BatchRefused,
}

impl ErrorCode {
    pub const fn close_code(self) -> u32 {
        match self {
            Self::ProtocolViolation => 1,
            Self::Unauthenticated => 2,
            Self::Revoked => 3,
            Self::UnsupportedVersion => 4,
            Self::Overloaded => 5,
            Self::ShuttingDown => 6,
            Self::BatchRefused => 7,
        }
    }

    pub fn from_close_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::ProtocolViolation,
            2 => Self::Unauthenticated,
            3 => Self::Revoked,
            4 => Self::UnsupportedVersion,
            5 => Self::Overloaded,
            6 => Self::ShuttingDown,
            7 => Self::BatchRefused,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
}
