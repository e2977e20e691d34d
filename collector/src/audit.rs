//! The audit trail: every API call and every administrative act, in one append-only,
//! hash-chained log that auditors can verify and export.
//!
//! Each entry commits to the one before it: its `hash` is the SHA-256 of its own fields
//! and of the previous entry's hash (the first entry follows [`GENESIS`]). Editing an
//! entry breaks its own hash; deleting one leaves a gap in the sequence numbers and a
//! broken link; moving one breaks both its hash (the sequence number is hashed) and its
//! link. [`Verifier`] walks the chain in order and names the first entry that does not
//! hold. This module is pure (no I/O): the store appends and reads rows, the API and the
//! command line call [`Verifier`].
//!
//! What the chain cannot show by itself is the loss of its newest entries: the head
//! (`seq`, `hash`) that `audit verify` prints is what an auditor records elsewhere and
//! compares later (`--expect-head`).

use serde::Serialize;
use vedetta_common::Timestamp;
use vedetta_common::identity::sha256_hex;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append. `params` and `detail` are JSON objects; they are stored, hashed
/// and exported as compact JSON with sorted keys (serde_json's default map), so that an
/// auditor can recompute every hash from an export.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at: Timestamp,
    /// Who: an API user's name, `cli:<unix user>` for the command line, `collector` for
    /// the collector's own acts (retention), `anonymous` for a request without a valid
    /// token.
    pub actor: String,
    /// The actor's role (`admin`, `analyst`, `auditor`, `member`, `system`, `none`).
    pub role: String,
    /// What: `api.read`, `api.write`, or a named act such as `advisory.publish`,
    /// `user.add`, `retention.purge`, `hold.place`.
    pub action: String,
    /// For API calls: method and path (`GET /api/v1/signals`).
    pub route: Option<String>,
    /// For API calls: the query parameters.
    pub params: Option<serde_json::Value>,
    /// For API calls: the HTTP status answered.
    pub status: Option<u16>,
    /// For reads: how many results were returned.
    pub results: Option<u64>,
    /// What an act changed or found (the advisory published, the counts purged...).
    pub detail: Option<serde_json::Value>,
}

impl NewAuditEntry {
    /// An administrative act, with what it changed.
    pub fn act(
        at: Timestamp,
        actor: impl Into<String>,
        role: impl Into<String>,
        action: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            at,
            actor: actor.into(),
            role: role.into(),
            action: action.into(),
            route: None,
            params: None,
            status: None,
            results: None,
            detail: Some(detail),
        }
    }

    /// The row this entry becomes at position `seq` after an entry whose hash is `prev`.
    pub fn chain(&self, seq: u64, prev_hash: &str) -> AuditRecord {
        let mut record = AuditRecord {
            seq,
            at: self.at,
            actor: self.actor.clone(),
            role: self.role.clone(),
            action: self.action.clone(),
            route: self.route.clone(),
            params: self.params.as_ref().map(|v| v.to_string()),
            status: self.status,
            results: self.results,
            detail: self.detail.as_ref().map(|v| v.to_string()),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.computed_hash();
        record
    }
}

/// An entry as stored: `params` and `detail` are the exact JSON texts that were hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: Timestamp,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub route: Option<String>,
    pub params: Option<String>,
    pub status: Option<u16>,
    pub results: Option<u64>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// SHA-256 over every field but `hash`, each written as its length and its bytes (a
    /// missing field as `-`), so that no two different entries share an input.
    pub fn computed_hash(&self) -> String {
        let mut input = Vec::with_capacity(256);
        let mut field = |value: Option<&str>| match value {
            Some(text) => {
                input.extend_from_slice(format!("{}:", text.len()).as_bytes());
                input.extend_from_slice(text.as_bytes());
                input.push(b';');
            }
            None => input.extend_from_slice(b"-;"),
        };
        field(Some("vedetta-audit-v1"));
        field(Some(&self.seq.to_string()));
        field(Some(&self.at.0.to_string()));
        field(Some(&self.actor));
        field(Some(&self.role));
        field(Some(&self.action));
        field(self.route.as_deref());
        field(self.params.as_deref());
        field(self.status.map(|s| s.to_string()).as_deref());
        field(self.results.map(|r| r.to_string()).as_deref());
        field(self.detail.as_deref());
        field(Some(&self.prev_hash));
        sha256_hex(&input)
    }

    /// The entry as the API and exports show it (JSON values rather than texts).
    pub fn to_json(&self) -> serde_json::Value {
        let json = |text: &Option<String>| {
            text.as_deref()
                .map(|t| serde_json::from_str(t).unwrap_or(serde_json::Value::String(t.into())))
        };
        serde_json::json!({
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "route": self.route,
            "params": json(&self.params),
            "status": self.status,
            "results": self.results,
            "detail": json(&self.detail),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

/// How the chain fails at an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The entry's fields no longer match its hash, though it follows its predecessor.
    Edited,
    /// Sequence numbers jump: entries between were deleted.
    Missing,
    /// The entry neither matches its hash nor follows its predecessor: it was moved
    /// (or entries before it were deleted and the rest renumbered).
    Reordered,
    /// The entry matches its hash but does not follow its predecessor: the one before it
    /// was replaced, or the chain was spliced.
    BrokenLink,
    /// The newest entry is not the head the auditor recorded.
    HeadMismatch,
}

/// The first entry at which the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    pub seq: u64,
    pub kind: ProblemKind,
    pub message: String,
}

/// The newest entry of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// The outcome of verifying the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries read.
    pub entries: u64,
    pub head: Option<AuditHead>,
    pub problem: Option<AuditProblem>,
}

/// Walks a chain in sequence order; stops at the first problem.
#[derive(Debug)]
pub struct Verifier {
    entries: u64,
    previous: Option<AuditHead>,
    problem: Option<AuditProblem>,
    /// A head recorded earlier by an auditor, which the chain must still contain as is.
    expected_head: Option<AuditHead>,
}

impl Verifier {
    pub fn new(expected_head: Option<AuditHead>) -> Self {
        Self {
            entries: 0,
            previous: None,
            problem: None,
            expected_head,
        }
    }

    /// Checks the next entry (rows must come in `seq` order). False once a problem is
    /// found: the rest need not be read.
    pub fn check(&mut self, record: &AuditRecord) -> bool {
        if self.problem.is_some() {
            return false;
        }
        self.entries += 1;
        let (expected_seq, expected_prev) = match &self.previous {
            Some(head) => (head.seq + 1, head.hash.as_str()),
            None => (1, GENESIS),
        };
        let seq = record.seq;
        let hash_holds = record.computed_hash() == record.hash;
        let link_holds = record.prev_hash == expected_prev;
        let problem = if seq != expected_seq && seq > expected_seq {
            Some((
                ProblemKind::Missing,
                if seq == expected_seq + 1 {
                    format!("entry {expected_seq} is missing (deleted): the log goes on at {seq}")
                } else {
                    format!(
                        "entries {expected_seq} to {} are missing (deleted): the log goes on at {seq}",
                        seq - 1
                    )
                },
            ))
        } else if seq != expected_seq {
            Some((
                ProblemKind::Reordered,
                format!(
                    "entry {seq} comes after entry {}: out of order",
                    seq.max(1) - 1
                ),
            ))
        } else if !hash_holds && !link_holds {
            Some((
                ProblemKind::Reordered,
                format!(
                    "entry {seq} neither matches its hash nor follows entry {}: it was moved, or entries before it were removed and the rest renumbered",
                    seq - 1
                ),
            ))
        } else if !hash_holds {
            Some((
                ProblemKind::Edited,
                format!("entry {seq} was altered: its contents no longer match its hash"),
            ))
        } else if !link_holds {
            Some((
                ProblemKind::BrokenLink,
                format!(
                    "entry {seq} does not follow entry {}: the entry before it was replaced",
                    seq - 1
                ),
            ))
        } else if let Some(head) = self.expected_head.as_ref().filter(|h| h.seq == seq)
            && head.hash != record.hash
        {
            Some((
                ProblemKind::HeadMismatch,
                format!(
                    "entry {seq} is not the entry recorded as the head: the log was rewritten from there on"
                ),
            ))
        } else {
            None
        };
        if let Some((kind, message)) = problem {
            self.problem = Some(AuditProblem { seq, kind, message });
            return false;
        }
        self.previous = Some(AuditHead {
            seq,
            hash: record.hash.clone(),
        });
        true
    }

    /// An entry that cannot even be read as one (a column of the wrong type): altered.
    /// Always false: the rest need not be read.
    pub fn unreadable(&mut self, seq: u64, why: &str) -> bool {
        if self.problem.is_none() {
            self.entries += 1;
            self.problem = Some(AuditProblem {
                seq,
                kind: ProblemKind::Edited,
                message: format!("entry {seq} was altered: it cannot be read ({why})"),
            });
        }
        false
    }

    /// The verdict. With an expected head, a chain that ends before it has lost its
    /// newest entries.
    pub fn finish(self) -> AuditVerification {
        let mut problem = self.problem;
        if problem.is_none()
            && let Some(expected) = &self.expected_head
        {
            let current = self.previous.as_ref().map_or(0, |head| head.seq);
            if current < expected.seq {
                problem = Some(AuditProblem {
                    seq: expected.seq,
                    kind: ProblemKind::HeadMismatch,
                    message: format!(
                        "the log ends at entry {current}, but entry {} was recorded as its head: newer entries were deleted",
                        expected.seq
                    ),
                });
            }
        }
        AuditVerification {
            ok: problem.is_none(),
            entries: self.entries,
            head: self.previous,
            problem,
        }
    }
}

impl AuditHead {
    /// Reads `SEQ:HASH`, as `audit verify` prints it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (seq, hash) = text
            .split_once(':')
            .ok_or("expected SEQ:HASH, as `audit verify` prints the head")?;
        let seq = seq
            .parse()
            .map_err(|_| format!("{seq:?} is not an entry number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the hash is 64 hexadecimal digits".into());
        }
        Ok(Self {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for AuditHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = records
                .last()
                .map_or(GENESIS.to_owned(), |r| r.hash.clone());
            let entry = NewAuditEntry::act(
                Timestamp(i64::try_from(seq).expect("test value") * 1_000),
                "alice",
                "admin",
                "user.add",
                serde_json::json!({ "user": format!("u{seq}") }),
            );
            records.push(entry.chain(seq, &prev));
        }
        records
    }

    fn verify(records: &[AuditRecord], head: Option<&AuditHead>) -> AuditVerification {
        let mut verifier = Verifier::new(head.cloned());
        for record in records {
            if !verifier.check(record) {
                break;
            }
        }
        verifier.finish()
    }

    #[test]
    fn an_untouched_chain_verifies_and_reports_its_head() {
        let records = chain(5);
        let verdict = verify(&records, None);
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!(verdict.entries, 5);
        assert_eq!(verdict.head.expect("test value").hash, records[4].hash);
        assert!(verify(&[], None).ok);
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut records = chain(5);
        records[2].actor = "mallory".into();
        let problem = verify(&records, None).problem.expect("test value");
        assert_eq!((problem.seq, problem.kind), (3, ProblemKind::Edited));
        let mut records = chain(5);
        records[1].detail = Some(r#"{"user":"other"}"#.into());
        assert_eq!(verify(&records, None).problem.expect("test value").seq, 2);
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let mut records = chain(5);
        records.remove(2);
        let problem = verify(&records, None).problem.expect("test value");
        assert_eq!((problem.seq, problem.kind), (4, ProblemKind::Missing));
        assert!(
            problem.message.contains("entry 3 is missing"),
            "{problem:?}"
        );
    }

    #[test]
    fn swapped_entries_are_named() {
        let mut records = chain(5);
        // Swap the contents of entries 2 and 3, keeping the sequence numbers in order.
        let (second, third) = (records[1].clone(), records[2].clone());
        records[1] = AuditRecord { seq: 2, ..third };
        records[2] = AuditRecord { seq: 3, ..second };
        let problem = verify(&records, None).problem.expect("test value");
        assert_eq!((problem.seq, problem.kind), (2, ProblemKind::Reordered));
    }

    #[test]
    fn a_rehashed_forgery_breaks_the_next_link() {
        let mut records = chain(5);
        records[2].actor = "mallory".into();
        records[2].hash = records[2].computed_hash();
        let problem = verify(&records, None).problem.expect("test value");
        assert_eq!((problem.seq, problem.kind), (4, ProblemKind::BrokenLink));
    }

    #[test]
    fn a_truncated_tail_is_caught_by_the_recorded_head() {
        let records = chain(5);
        let head = AuditHead::parse(&format!("5:{}", records[4].hash)).expect("test value");
        assert!(verify(&records, Some(&head)).ok);
        let problem = verify(&records[..4], Some(&head))
            .problem
            .expect("test value");
        assert_eq!(problem.kind, ProblemKind::HeadMismatch);
        let other = AuditHead::parse(&format!("5:{}", records[3].hash)).expect("test value");
        let problem = verify(&records, Some(&other)).problem.expect("test value");
        assert_eq!((problem.seq, problem.kind), (5, ProblemKind::HeadMismatch));
        assert!(AuditHead::parse("5:xyz").is_err());
    }
}
