//! Governance end to end: the audit chain of a real collector (API calls, administrative
//! commands, enrollments), tampering with the real database file caught by `audit
//! verify`, the exports auditors take away (CSV whose hashes they can recompute, NDJSON,
//! STIX 2.1 checked by the OASIS validator), and legal holds over the API.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use vedetta_collector::audit::AuditRecord;
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};
use vedetta_e2e::{Agent, Collector, binary, wait_until};

fn attack(kind: &str, address: &str) -> Signal {
    Signal::new(kind, Severity::High, Timestamp::now()).with_indicator(IndicatorType::Ip, address)
}

/// `audit verify` on a data directory: exit code and JSON verdict.
fn verify(data_dir: &Path) -> (i32, Value) {
    let output = Command::new(binary("vedetta-collector"))
        .args(["audit", "verify", "--format", "json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("audit verify runs");
    let verdict = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "verify output: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), verdict)
}

/// A copy of the data directory's database, tampered with by `sql` as someone holding
/// the file would: the append-only guard dropped first.
fn tampered(original: &Path, name: &str, sql: &str) -> PathBuf {
    let dir = original.with_file_name(format!("tampered-{name}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let database = dir.join("vedetta.db");
    {
        // A consistent copy, WAL included.
        let source = rusqlite::Connection::open(original.join("vedetta.db")).expect("open");
        source
            .execute("VACUUM INTO ?1", [database.to_str().expect("utf-8 path")])
            .expect("copy");
    }
    let connection = rusqlite::Connection::open(&database).expect("open copy");
    connection
        .execute_batch(&format!(
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; {sql}"
        ))
        .expect("tamper");
    std::fs::copy(original.join("collector.toml"), dir.join("collector.toml")).expect("config");
    dir
}

#[test]
fn audit_verify_names_the_entry_edited_deleted_or_moved() {
    let mut collector = Collector::init();
    for org in ["bank", "city"] {
        collector.add_org(org);
    }
    let analyst = collector.user("alice", "analyst", None);
    collector.start();
    let api = collector.api();
    for _ in 0..3 {
        assert_eq!(api.get("/api/v1/campaigns", Some(&analyst)).status, 200);
    }
    collector.stop();
    // org add ×2, user add, three reads: six entries at least.
    let (code, verdict) = verify(&collector.data_dir);
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["ok"], true);
    let entries = verdict["entries"].as_u64().expect("entries");
    assert!(entries >= 6, "{verdict}");

    for (name, sql, seq, kind) in [
        (
            "edited",
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4",
            4,
            "edited",
        ),
        (
            "deleted",
            "DELETE FROM audit_log WHERE seq = 3",
            4,
            "missing",
        ),
        (
            "reordered",
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = -1;",
            2,
            "reordered",
        ),
    ] {
        let dir = tampered(&collector.data_dir, name, sql);
        let (code, verdict) = verify(&dir);
        assert_eq!(code, 1, "{name}: {verdict}");
        assert_eq!(verdict["ok"], false, "{name}");
        assert_eq!(verdict["problem"]["seq"], seq, "{name}: {verdict}");
        assert_eq!(verdict["problem"]["kind"], kind, "{name}: {verdict}");
        // The person's view names the entry too.
        let output = Command::new(binary("vedetta-collector"))
            .args(["audit", "verify", "--data-dir"])
            .arg(&dir)
            .output()
            .expect("verify");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&format!("entry {seq}")), "{name}: {text}");
    }
    // The newest entry deleted: only a head recorded earlier shows it.
    let head = format!(
        "{}:{}",
        verdict["head"]["seq"],
        verdict["head"]["hash"].as_str().expect("hash")
    );
    let last = verdict["head"]["seq"].as_u64().expect("seq");
    let dir = tampered(
        &collector.data_dir,
        "truncated",
        &format!("DELETE FROM audit_log WHERE seq >= {last}"),
    );
    let output = Command::new(binary("vedetta-collector"))
        .args([
            "audit",
            "verify",
            "--format",
            "json",
            "--expect-head",
            &head,
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .expect("verify");
    let verdict: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(output.status.code(), Some(1), "{verdict}");
    assert_eq!(verdict["problem"]["kind"], "head_mismatch");
}

#[test]
fn every_call_and_act_is_recorded_and_auditors_can_recompute_the_chain() {
    let mut collector = Collector::init();
    for org in ["bank", "city"] {
        collector.add_org(org);
    }
    let analyst = collector.user("alice", "analyst", None);
    let auditor = collector.user("olga", "auditor", None);
    let member = collector.user("bank-it", "member", Some("bank"));
    let admin = collector.user("root", "admin", None);
    collector.start();
    let api = collector.api();

    // Real agents of two organisations report one address: a campaign.
    let mut agents = Vec::new();
    for org in ["bank", "city"] {
        let mut agent = Agent::enrolled(&collector, org, "");
        agent
            .emit(&[attack("ssh_bruteforce", "203.0.113.7")])
            .expect("emit");
        agent.start();
        agents.push(agent);
    }
    let mut campaign_id = String::new();
    wait_until("the campaign", || {
        let answer = api.get("/api/v1/campaigns", Some(&analyst));
        match answer.body["items"]
            .as_array()
            .and_then(|items| items.first())
        {
            Some(campaign) => {
                campaign_id = campaign["id"].as_str().expect("id").to_owned();
                true
            }
            None => false,
        }
    });

    let signals = api.get("/api/v1/signals?org=bank&limit=10", Some(&analyst));
    assert_eq!(signals.status, 200);
    assert_eq!(api.get("/api/v1/signals", None).status, 401);
    assert_eq!(api.get("/api/v1/audit", Some(&member)).status, 403);
    assert_eq!(api.get("/api/v1/audit", Some(&analyst)).status, 403);
    let published = api.post(
        "/api/v1/advisories",
        Some(&analyst),
        &json!({"indicator": {"type": "ip", "value": "203.0.113.7"}, "severity": "high",
                "description": "brute force at two members", "expires_in": "7d"}),
    );
    assert_eq!(published.status, 201, "{:?}", published.body);

    // Holds: admin only, audited, listed for auditors.
    let hold = api.post(
        "/api/v1/holds",
        Some(&admin),
        &json!({"campaign": campaign_id, "reason": "case 2026/114, prosecutor's request"}),
    );
    assert_eq!(hold.status, 201, "{:?}", hold.body);
    assert_eq!(
        api.post(
            "/api/v1/holds",
            Some(&analyst),
            &json!({"org": "bank", "reason": "x"})
        )
        .status,
        403
    );
    assert_eq!(
        api.post(
            "/api/v1/holds",
            Some(&admin),
            &json!({"org": "nowhere", "reason": "x"})
        )
        .status,
        404
    );
    let holds = api.get("/api/v1/holds", Some(&auditor));
    assert_eq!(holds.body["items"][0]["target"], campaign_id.as_str());
    let hold_id = hold.body["id"].as_str().expect("id");
    assert_eq!(
        api.delete(&format!("/api/v1/holds/{hold_id}"), Some(&admin))
            .status,
        200
    );

    // The auditor's view of the log: newest first, the calls above with who and what.
    let log = api.get("/api/v1/audit?limit=1000", Some(&auditor));
    assert_eq!(log.status, 200, "{:?}", log.body);
    let items = log.body["items"].as_array().expect("items").clone();
    let find = |predicate: &dyn Fn(&Value) -> bool| items.iter().find(|e| predicate(e)).cloned();
    let read = find(&|e| {
        e["route"] == "GET /api/v1/signals" && e["actor"] == "alice" && e["status"] == 200
    })
    .expect("the analyst's read");
    assert_eq!(read["role"], "analyst");
    assert_eq!(read["action"], "api.read");
    assert_eq!(read["params"], json!({"org": "bank", "limit": "10"}));
    assert_eq!(
        read["results"],
        signals.body["items"].as_array().expect("items").len()
    );
    assert!(find(&|e| e["actor"] == "anonymous" && e["status"] == 401).is_some());
    assert!(find(&|e| e["actor"] == "bank-it" && e["status"] == 403).is_some());
    let publish = find(&|e| e["action"] == "advisory.publish").expect("publish");
    assert_eq!(publish["detail"]["indicator"]["value"], "203.0.113.7");
    assert!(find(&|e| e["action"] == "hold.place" && e["actor"] == "root").is_some());
    assert!(find(&|e| e["action"] == "hold.release").is_some());
    assert_eq!(
        find(&|e| e["action"] == "agent.enroll")
            .map(|e| e["role"].clone())
            .expect("enrollment"),
        "system"
    );
    let user_add = find(&|e| e["action"] == "user.add" && e["detail"]["user"] == "olga")
        .expect("user add by the command line");
    assert!(
        user_add["actor"]
            .as_str()
            .expect("actor")
            .starts_with("cli:"),
        "{user_add}"
    );
    assert!(
        !log.body.to_string().contains(&analyst),
        "tokens never reach the log"
    );

    // The CSV export holds what each hash covers: recompute the chain from it.
    let csv = api.get("/api/v1/audit?format=csv", Some(&auditor));
    assert_eq!(csv.status, 200);
    let text = csv.body.as_str().expect("csv text").to_owned();
    let mut reader = csv_reader(&text);
    let mut previous = vedetta_collector::audit::GENESIS.to_owned();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.expect("csv record");
        let field = |i: usize| record.get(i).unwrap_or("").to_owned();
        let optional = |i: usize| Some(field(i)).filter(|v| !v.is_empty());
        let entry = AuditRecord {
            seq: field(0).parse().expect("seq"),
            at: Timestamp(field(2).parse().expect("at_ns")),
            actor: field(3),
            role: field(4),
            action: field(5),
            route: optional(6),
            params: optional(7),
            status: optional(8).map(|s| s.parse().expect("status")),
            results: optional(9).map(|r| r.parse().expect("results")),
            detail: optional(10),
            prev_hash: field(11),
            hash: field(12),
        };
        assert_eq!(entry.prev_hash, previous, "entry {} links", entry.seq);
        assert_eq!(
            entry.computed_hash(),
            entry.hash,
            "entry {} hashes",
            entry.seq
        );
        previous = entry.hash;
        rows += 1;
    }
    assert!(rows >= items.len(), "{rows} rows exported");
    // NDJSON of the signals, for a member: its own organisation only.
    let export = api.get("/api/v1/signals?format=ndjson", Some(&member));
    assert_eq!(export.status, 200);
    let lines: Vec<Value> = export
        .body
        .as_str()
        .map(|text| {
            text.lines()
                .map(|l| serde_json::from_str(l).expect("ndjson"))
                .collect()
        })
        .unwrap_or_else(|| vec![export.body.clone()]);
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|s| s["org"] == "bank"), "{lines:?}");

    // CSV of the signals, for the auditor: every organisation's, with a header.
    let csv = api.get("/api/v1/signals?format=csv", Some(&auditor));
    assert_eq!(csv.status, 200);
    let text = csv.body.as_str().expect("csv text").to_owned();
    let mut reader = csv_reader(&text);
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, vedetta_collector::export::SIGNAL_COLUMNS);
    let orgs: std::collections::BTreeSet<String> = reader
        .records()
        .map(|r| r.expect("row").get(1).expect("org").to_owned())
        .collect();
    assert_eq!(orgs, ["bank".to_owned(), "city".to_owned()].into());

    let verdict = api.get("/api/v1/audit/verify", Some(&auditor));
    assert_eq!(verdict.body["ok"], true, "{:?}", verdict.body);
    for mut agent in agents {
        assert!(agent.stop(), "{}", agent.log());
    }
    collector.stop();
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::Reader::from_reader(text.as_bytes())
}

/// The OASIS STIX 2.1 validator (`pip install stix2-validator`): `STIX2_VALIDATOR`, or
/// `stix2_validator` on the PATH.
fn stix_validator() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("STIX2_VALIDATOR") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("stix2_validator"))
            .find(|candidate| candidate.exists())
    })
}

#[test]
fn the_stix_export_is_valid_stix_2_1() {
    let Some(validator) = stix_validator() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "stix2_validator is missing (pip install stix2-validator; .ci/run installs it)"
        );
        eprintln!("skipped: stix2_validator not installed (pip install stix2-validator)");
        return;
    };
    let mut collector = Collector::init();
    for org in ["bank", "city", "town"] {
        collector.add_org(org);
    }
    let analyst = collector.user("alice", "analyst", None);
    collector.start();
    let api = collector.api();
    let mut agents = Vec::new();
    for org in ["bank", "city", "town"] {
        let mut agent = Agent::enrolled(&collector, org, "");
        let mut signals = vec![attack("ssh_bruteforce", "203.0.113.7")];
        let mut dropper = Signal::new("suspicious_process", Severity::Critical, Timestamp::now());
        dropper = dropper.with_indicator(IndicatorType::Sha256, "ab".repeat(32));
        signals.push(dropper);
        if org != "town" {
            signals.push(
                Signal::new("web_exploit_attempt", Severity::High, Timestamp::now())
                    .with_indicator(IndicatorType::Url, "http://evil.example/x.sh?a='1'"),
            );
        }
        agent.emit(&signals).expect("emit");
        agent.start();
        agents.push(agent);
    }
    wait_until("three campaigns", || {
        api.get("/api/v1/campaigns", Some(&analyst)).body["items"]
            .as_array()
            .is_some_and(|items| items.len() == 3)
    });
    let bundle = api.get("/api/v1/export/stix", Some(&analyst));
    assert_eq!(bundle.status, 200, "{:?}", bundle.body);
    let objects = bundle.body["objects"].as_array().expect("objects");
    let count = |kind: &str| objects.iter().filter(|o| o["type"] == kind).count();
    assert_eq!(count("campaign"), 3);
    assert_eq!(count("indicator"), 3);
    assert_eq!(count("relationship"), 3);
    assert_eq!(count("sighting"), 3);
    let file = collector.dir.path().join("bundle.json");
    std::fs::write(&file, bundle.body.to_string()).expect("write bundle");
    let output = Command::new(&validator)
        .arg("--version")
        .arg("2.1")
        .arg(&file)
        .output()
        .expect("the validator runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !report.contains("[X]"),
        "the STIX validator refuses the export:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for mut agent in agents {
        assert!(agent.stop(), "{}", agent.log());
    }
    collector.stop();
}

/// Sets `[api] tls_certificate` and `tls_key` in the collector's configuration.
fn use_certificate(collector: &Collector, certificate: &Path, key: &Path) {
    let path = collector.data_dir.join("collector.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path)
        .expect("config")
        .parse()
        .expect("toml");
    let api = config
        .entry("api")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[api] is a table");
    api.insert(
        "tls_certificate".into(),
        certificate.display().to_string().into(),
    );
    api.insert("tls_key".into(), key.display().to_string().into());
    std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("write config");
}

fn openssl(args: &[&str], paths: &[&Path]) {
    let output = Command::new("openssl")
        .args(args)
        .args(paths)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// The operator's own PKI, made with openssl: a CA and, signed by it, the API's
/// certificate for localhost. Returns (CA certificate, chain file, key).
fn operator_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let file = |suffix: &str| dir.join(format!("{name}-{suffix}"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=Operator CA"],
        ]
        .concat(),
        &[
            Path::new("-keyout"),
            &file("ca.key"),
            Path::new("-out"),
            &file("ca.crt"),
        ],
    );
    openssl(
        &[&["req"][..], &ec, &["-subj", "/CN=collector.example.org"]].concat(),
        &[
            Path::new("-keyout"),
            &file("api.key"),
            Path::new("-out"),
            &file("api.csr"),
        ],
    );
    std::fs::write(
        file("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    openssl(
        &["x509", "-req", "-days", "2", "-set_serial", "7"],
        &[
            Path::new("-in"),
            &file("api.csr"),
            Path::new("-CA"),
            &file("ca.crt"),
            Path::new("-CAkey"),
            &file("ca.key"),
            Path::new("-extfile"),
            &file("ext"),
            Path::new("-out"),
            &file("api.crt"),
        ],
    );
    let chain = [
        std::fs::read_to_string(file("api.crt")).expect("api.crt"),
        std::fs::read_to_string(file("ca.crt")).expect("ca.crt"),
    ]
    .concat();
    std::fs::write(file("chain.pem"), chain).expect("chain");
    (file("ca.crt"), file("chain.pem"), file("api.key"))
}

#[test]
fn the_api_serves_the_certificate_the_operator_provides() {
    let mut collector = Collector::init();
    let dir = collector.dir.path().to_owned();
    let (ca, certificate, key) = operator_pki(&dir, "operator");
    let (_, _, other_key) = operator_pki(&dir, "other");

    // A key that is not the certificate's: `serve` refuses to start, and says why.
    use_certificate(&collector, &certificate, &other_key);
    let refused = Command::new(binary("vedetta-collector"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&collector.data_dir)
        .output()
        .expect("serve runs");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("does not belong"), "{message}");

    // The right pair: a client that trusts only the operator's CA (not the collector's)
    // talks to the API.
    use_certificate(&collector, &certificate, &key);
    collector.start();
    let https = collector.https.expect("started");
    let api = vedetta_e2e::Api::new(https, &std::fs::read(&ca).expect("operator CA"));
    let health = api.get("/healthz", None);
    assert_eq!(health.status, 200);
    collector.stop();
}
