//! Exports for the partners' own tools and for auditors: campaigns as a STIX 2.1 bundle,
//! signals and the audit log as NDJSON and CSV. Pure functions from stored records to
//! bytes; the API streams them page by page.
//!
//! STIX mapping: the collector is an `identity` (the bundle's producer); each campaign is
//! a `campaign` with its indicator as an `indicator` (a STIX pattern) that `indicates` it,
//! and a `sighting` of that indicator by the organisations that saw it (each an
//! `identity`). Everything is marked TLP:AMBER: it is shared inside the partnership.
//! Identifiers are derived from the records (a name-based UUID in version 4 form), so an
//! export made twice names the same objects with the same ids and the partners' tools
//! update rather than duplicate them.

use crate::audit::AuditRecord;
use crate::correlate::Campaign;
use crate::store::StoredSignal;
use serde_json::{Value, json};
use vedetta_common::identity::sha256_hex;
use vedetta_common::{Indicator, IndicatorType, Timestamp};

/// STIX 2.1's predefined TLP:AMBER marking definition.
pub const TLP_AMBER: &str = "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82";

/// A stable STIX id: `type--` and a UUID (version 4 form, as the STIX schema wants one of
/// versions 1–5) taken from the SHA-256 of the record's name.
fn stix_id(kind: &str, name: &str) -> String {
    let digest = sha256_hex(format!("vedetta:{kind}:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    format!(
        "{kind}--{}",
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    )
}

/// STIX timestamps: UTC, `Z`, milliseconds.
fn stix_time(at: Timestamp) -> String {
    let datetime = at.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        datetime.year(),
        u8::from(datetime.month()),
        datetime.day(),
        datetime.hour(),
        datetime.minute(),
        datetime.second(),
        datetime.millisecond()
    )
}

/// A string literal of a STIX pattern.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The STIX pattern matching an indicator, if STIX can express it.
pub fn pattern(indicator: &Indicator) -> Option<String> {
    let value = indicator.value.as_str();
    let v6 = value.contains(':');
    let object = match indicator.kind {
        IndicatorType::Ip | IndicatorType::Cidr if v6 => "ipv6-addr:value",
        IndicatorType::Ip | IndicatorType::Cidr => "ipv4-addr:value",
        IndicatorType::Domain => "domain-name:value",
        IndicatorType::Url => "url:value",
        IndicatorType::Sha256 => "file:hashes.'SHA-256'",
        IndicatorType::User | IndicatorType::Port => return None,
    };
    // A network matches the addresses inside it.
    let operator = if indicator.kind == IndicatorType::Cidr {
        "ISSUBSET"
    } else {
        "="
    };
    Some(format!("[{object} {operator} {}]", literal(value)))
}

/// A STIX 2.1 bundle of `campaigns`, produced by the collector named `producer`, at `now`.
pub fn stix_bundle(campaigns: &[Campaign], producer: &str, now: Timestamp) -> Value {
    let producer_id = stix_id("identity", &format!("producer:{producer}"));
    // Identities keep their ids across exports, so they keep one creation time too (STIX
    // forbids a new `created` for an existing id): the epoch, as "known since always".
    let created = stix_time(Timestamp(0));
    let mut objects = vec![json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": producer_id,
        "created": created,
        "modified": created,
        "name": producer,
        "identity_class": "organization",
        "object_marking_refs": [TLP_AMBER],
    })];
    let mut orgs_seen = std::collections::BTreeSet::new();
    for campaign in campaigns {
        let Some(pattern) = pattern(&campaign.indicator) else {
            continue;
        };
        let common = |kind: &str, name: &str| {
            json!({
                "type": kind,
                "spec_version": "2.1",
                "id": stix_id(kind, name),
                "created": stix_time(campaign.opened_at),
                "modified": stix_time(campaign.updated_at),
                "created_by_ref": producer_id,
                "object_marking_refs": [TLP_AMBER],
            })
        };
        let indicator_text = format!(
            "{} {}",
            campaign.indicator.kind.as_str(),
            campaign.indicator.value
        );
        let kinds: Vec<&str> = campaign.kinds.iter().map(String::as_str).collect();
        let mut stix_campaign = common("campaign", &campaign.id);
        extend(
            &mut stix_campaign,
            json!({
                "name": format!("{} ({indicator_text})", campaign.id),
                "description": format!(
                    "{indicator_text} seen by {} organisations of the partnership in {} signals ({}); severity {}, score {}/100, {}.",
                    campaign.orgs.len(),
                    campaign.signals,
                    kinds.join(", "),
                    campaign.severity.as_str(),
                    campaign.score,
                    campaign.status.as_str(),
                ),
                "first_seen": stix_time(campaign.first_seen),
                "last_seen": stix_time(campaign.last_seen.max(campaign.first_seen)),
                "confidence": campaign.score.min(100),
                "external_references": [{
                    "source_name": "vedetta",
                    "external_id": campaign.id,
                }],
            }),
        );
        let mut indicator = common("indicator", &campaign.id);
        extend(
            &mut indicator,
            json!({
                "name": indicator_text,
                "indicator_types": ["malicious-activity"],
                "pattern": pattern,
                "pattern_type": "stix",
                "pattern_version": "2.1",
                "valid_from": stix_time(campaign.first_seen),
            }),
        );
        let mut relationship = common("relationship", &campaign.id);
        extend(
            &mut relationship,
            json!({
                "relationship_type": "indicates",
                "source_ref": indicator["id"],
                "target_ref": stix_campaign["id"],
            }),
        );
        let org_ids: Vec<String> = campaign
            .orgs
            .iter()
            .map(|o| stix_id("identity", &format!("org:{}", o.org)))
            .collect();
        for org in &campaign.orgs {
            if orgs_seen.insert(org.org.clone()) {
                objects.push(json!({
                    "type": "identity",
                    "spec_version": "2.1",
                    "id": stix_id("identity", &format!("org:{}", org.org)),
                    "created": created,
                    "modified": created,
                    "created_by_ref": producer_id,
                    "name": org.org,
                    "identity_class": "organization",
                    "object_marking_refs": [TLP_AMBER],
                }));
            }
        }
        let mut sighting = common("sighting", &campaign.id);
        extend(
            &mut sighting,
            json!({
                "sighting_of_ref": indicator["id"],
                "where_sighted_refs": org_ids,
                "first_seen": stix_time(campaign.first_seen),
                "last_seen": stix_time(campaign.last_seen.max(campaign.first_seen)),
                "count": campaign.signals.min(999_999_999),
            }),
        );
        objects.extend([stix_campaign, indicator, relationship, sighting]);
    }
    let ids: Vec<&str> = objects.iter().filter_map(|o| o["id"].as_str()).collect();
    json!({
        "type": "bundle",
        "id": stix_id("bundle", &format!("{}:{}", ids.join(","), now.0)),
        "objects": objects,
    })
}

fn extend(object: &mut Value, more: Value) {
    if let (Value::Object(object), Value::Object(more)) = (object, more) {
        object.extend(more);
    }
}

/// The columns of the signals' CSV export.
pub const SIGNAL_COLUMNS: [&str; 13] = [
    "id",
    "org",
    "agent_id",
    "kind",
    "severity",
    "first_seen",
    "last_seen",
    "count",
    "received_at",
    "host",
    "indicators",
    "attributes",
    "mitre",
];

/// A cell that a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, tab, carriage
/// return first), quoted with a leading `'`: agents choose some of these texts.
fn inert(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// One signal as a CSV record (indicators as `type:value` separated by spaces; the
/// attributes as JSON).
pub fn signal_record(stored: &StoredSignal) -> Vec<String> {
    let signal = &stored.signal;
    let cells = vec![
        signal.id.to_string(),
        stored.org.clone(),
        stored.agent_id.clone(),
        signal.kind.clone(),
        signal.severity.as_str().to_owned(),
        signal.first_seen.to_rfc3339(),
        signal.last_seen.to_rfc3339(),
        signal.count.to_string(),
        stored.received_at.to_rfc3339(),
        signal.host.clone().unwrap_or_default(),
        signal
            .indicators
            .iter()
            .map(|i| format!("{}:{}", i.kind.as_str(), i.value))
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::to_string(&signal.attributes).unwrap_or_default(),
        signal.mitre.clone().unwrap_or_default(),
    ];
    cells.into_iter().map(inert).collect()
}

/// The columns of the audit log's CSV export: exactly what each hash covers, so that an
/// auditor can recompute the chain from the file (`at_ns` is the hashed time).
pub const AUDIT_COLUMNS: [&str; 13] = [
    "seq",
    "at",
    "at_ns",
    "actor",
    "role",
    "action",
    "route",
    "params",
    "status",
    "results",
    "detail",
    "prev_hash",
    "hash",
];

pub fn audit_record(record: &AuditRecord) -> Vec<String> {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    vec![
        record.seq.to_string(),
        record.at.to_rfc3339(),
        record.at.0.to_string(),
        record.actor.clone(),
        record.role.clone(),
        record.action.clone(),
        text(&record.route),
        text(&record.params),
        record.status.map(|s| s.to_string()).unwrap_or_default(),
        record.results.map(|r| r.to_string()).unwrap_or_default(),
        text(&record.detail),
        record.prev_hash.clone(),
        record.hash.clone(),
    ]
}

/// Rows as CSV, with the header first when `header`.
pub fn csv_rows(header: Option<&[&str]>, rows: &[Vec<String>]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory fails only on a broken invariant of the csv crate; a row that
    // could not be written is left out rather than stopping an export.
    if let Some(header) = header {
        let _ = writer.write_record(header);
    }
    for row in rows {
        let _ = writer.write_record(row);
    }
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{CampaignOrg, Status};
    use vedetta_common::Severity;

    fn campaign(kind: IndicatorType, value: &str) -> Campaign {
        let at = Timestamp(1_763_800_000_123_456_789);
        Campaign {
            id: "CMP-1".into(),
            indicator: Indicator::new(kind, value.to_owned()),
            status: Status::Open,
            severity: Severity::High,
            score: 70,
            orgs: ["bank", "city"]
                .iter()
                .map(|org| CampaignOrg {
                    org: (*org).into(),
                    first_seen: at,
                    last_seen: at,
                    signals: 2,
                })
                .collect(),
            kinds: ["ssh_bruteforce".to_owned()].into(),
            signals: 4,
            first_seen: at,
            last_seen: at,
            opened_at: at,
            updated_at: at,
            closed_at: None,
        }
    }

    #[test]
    fn patterns_follow_stix_and_escape_quotes() {
        let p = |kind, value: &str| {
            pattern(&Indicator::new(kind, value.to_owned())).expect("test value")
        };
        assert_eq!(
            p(IndicatorType::Ip, "203.0.113.7"),
            "[ipv4-addr:value = '203.0.113.7']"
        );
        assert_eq!(
            p(IndicatorType::Cidr, "2001:db8::/32"),
            "[ipv6-addr:value ISSUBSET '2001:db8::/32']"
        );
        assert_eq!(
            p(IndicatorType::Url, "http://x.example/a'b\\c"),
            r"[url:value = 'http://x.example/a\'b\\c']"
        );
        assert_eq!(
            p(IndicatorType::Sha256, "ab"),
            "[file:hashes.'SHA-256' = 'ab']"
        );
        assert!(pattern(&Indicator::new(IndicatorType::User, "pn:x")).is_none());
    }

    #[test]
    fn a_bundle_names_the_same_objects_each_time() {
        let campaigns = [campaign(IndicatorType::Ip, "203.0.113.7")];
        let first = stix_bundle(&campaigns, "COSC", Timestamp(1));
        let second = stix_bundle(&campaigns, "COSC", Timestamp(2_000_000_000_000));
        assert_eq!(
            first["objects"][0], second["objects"][0],
            "same identity object"
        );
        let ids = |bundle: &Value| -> Vec<String> {
            bundle["objects"]
                .as_array()
                .expect("test value")
                .iter()
                .map(|o| o["id"].as_str().expect("test value").to_owned())
                .collect()
        };
        assert_eq!(ids(&first), ids(&second));
        // producer, two organisations, campaign, indicator, relationship, sighting
        assert_eq!(ids(&first).len(), 7);
        assert_eq!(first["objects"][3]["created"], "2025-11-22T08:26:40.123Z");
        for id in ids(&first) {
            let uuid = id.split_once("--").expect("test value").1;
            assert_eq!(uuid.as_bytes()[14], b'4', "{id}");
        }
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_made_inert() {
        assert_eq!(inert("=HYPERLINK(\"x\")".into()), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("@SUM(1)".into()), "'@SUM(1)");
        assert_eq!(inert("web-01".into()), "web-01");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let text = String::from_utf8(csv_rows(
            Some(&["a", "b"]),
            &[vec!["x,y".into(), "say \"hi\"".into()]],
        ))
        .expect("test value");
        assert_eq!(text, "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n");
    }
}
