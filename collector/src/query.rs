//! `vedetta-collector query …` and `advisory …`: the analysts' command line over the
//! HTTPS API. Tables for people, `--format json` (the API's own JSON) for scripts. The
//! server is verified against the collector's CA (`--ca`, the `ca.crt` of its data
//! directory); the token comes from `--token`, `--token-file` or `VEDETTA_TOKEN` (the
//! latter two keep it out of the process list).

use crate::cli::Format;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the API is and who is asking.
#[derive(Debug, Args)]
pub struct Connection {
    /// The collector's API, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "VEDETTA_URL", global = true)]
    pub url: Option<String>,
    /// API token (prefer --token-file or VEDETTA_TOKEN: arguments are visible to others).
    #[arg(long, env = "VEDETTA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the API token.
    #[arg(long, conflicts_with = "token", global = true)]
    pub token_file: Option<PathBuf>,
    /// The collector's CA certificate (PEM): `ca.crt` in its data directory.
    #[arg(long, env = "VEDETTA_CA", global = true)]
    pub ca: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    pub what: QueryCommand,
    #[command(flatten)]
    pub connection: Connection,
}

/// Filters shared by the lists.
#[derive(Debug, Args, Default)]
pub struct Filters {
    /// From this time (RFC 3339, or a duration ago such as 24h).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub org: Option<String>,
    /// Lowest severity.
    #[arg(long)]
    pub severity: Option<String>,
    /// Rows per page (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue after this cursor (printed after a full page).
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Signals, newest first.
    Signals {
        #[command(flatten)]
        filters: Filters,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Signals carrying this indicator value.
        #[arg(long)]
        indicator: Option<String>,
    },
    /// Campaigns (indicators seen across organisations), newest first.
    Campaigns {
        #[command(flatten)]
        filters: Filters,
        /// open, closed or all.
        #[arg(long, default_value = "all")]
        status: String,
        #[arg(long)]
        indicator: Option<String>,
    },
    /// One campaign with its newest signals.
    Campaign { id: String },
    /// Incidents (chains of steps inside one organisation).
    Incidents {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, default_value = "all")]
        status: String,
    },
    /// Enrolled agents and their health.
    Agents,
    /// Who saw this address, domain or hash, when, doing what.
    Indicator { value: String },
}

#[derive(Debug, Args)]
pub struct AdvisoryArgs {
    #[command(subcommand)]
    pub what: AdvisoryCommand,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Subcommand)]
pub enum AdvisoryCommand {
    /// Publish an indicator to every agent.
    Publish {
        /// ip, cidr, domain, url or sha256.
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        value: String,
        #[arg(long, default_value = "high")]
        severity: String,
        #[arg(long, default_value = "")]
        description: String,
        /// How long it stays in force.
        #[arg(long, default_value = "7d")]
        expires_in: String,
    },
    /// Advisories in force (with --all, also expired and withdrawn ones).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Withdraw an advisory: agents forget it.
    Withdraw { id: String },
}

/// An API client verifying the server against the collector's CA.
struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(connection: &Connection) -> anyhow::Result<Self> {
        let token = match (&connection.token, &connection.token_file) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .trim()
                .to_owned(),
            (None, None) => bail!("give --token, --token-file or VEDETTA_TOKEN"),
        };
        let url = connection
            .url
            .as_deref()
            .context("give --url or VEDETTA_URL (e.g. https://127.0.0.1:8443)")?;
        let ca_file = connection
            .ca
            .as_deref()
            .context("give --ca or VEDETTA_CA: the collector's ca.crt")?;
        let pem = std::fs::read(ca_file)
            .with_context(|| format!("cannot read the CA {}", ca_file.display()))?;
        let agent = https_agent(&pem, Some(Duration::from_secs(60)))
            .with_context(|| format!("{} holds no PEM certificate", ca_file.display()))?;
        Ok(Self {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn answer(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = body["error"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned);
            bail!("the collector answered {status}: {message}");
        }
        Ok(body)
    }

    fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token));
        for (key, value) in query {
            request = request.query(*key, value);
        }
        Self::answer(
            request
                .call()
                .with_context(|| format!("cannot reach {}", self.base))?,
        )
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body)
            .with_context(|| format!("cannot reach {}", self.base))?;
        Self::answer(response)
    }

    fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("cannot reach {}", self.base))?;
        Self::answer(response)
    }
}

/// Path segments are percent-encoded: indicator values carry '/', ':' and more.
/// An HTTPS client of the API that trusts only the collector's CA (`ca_pem`) and hands
/// back error statuses as answers; shared by `query`, the load generator and the tests.
pub fn https_agent(ca_pem: &[u8], timeout: Option<Duration>) -> anyhow::Result<ureq::Agent> {
    let ca = ureq::tls::Certificate::from_pem(ca_pem).context("no PEM certificate")?;
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .new_agent())
}

fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn filters(filters: &Filters) -> Vec<(&'static str, String)> {
    let mut query = vec![("limit", filters.limit.to_string())];
    for (key, value) in [
        ("since", &filters.since),
        ("until", &filters.until),
        ("org", &filters.org),
        ("severity", &filters.severity),
        ("cursor", &filters.cursor),
    ] {
        if let Some(value) = value {
            query.push((key, value.clone()));
        }
    }
    query
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns, cutting long cells.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    const WIDEST: usize = 48;
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count().min(WIDEST))
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let cell: String = cell
                .chars()
                .filter(|c| !c.is_control())
                .take(WIDEST)
                .collect();
            if i + 1 == cells.len() {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn more(page: &Value) {
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("(more: --cursor {cursor})");
    }
}

fn indicators(value: &Value) -> String {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| format!("{}:{}", text(&i["type"]), text(&i["value"])))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn print_signals(page: &Value) {
    let rows: Vec<Vec<String>> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["last_seen"]),
                text(&s["org"]),
                text(&s["kind"]),
                text(&s["severity"]),
                text(&s["count"]),
                indicators(&s["indicators"]),
            ]
        })
        .collect();
    table(
        &[
            "LAST SEEN",
            "ORG",
            "KIND",
            "SEVERITY",
            "COUNT",
            "INDICATORS",
        ],
        &rows,
    );
    more(page);
}

fn campaign_row(c: &Value) -> Vec<String> {
    let orgs = c["orgs"]
        .as_array()
        .map(|o| {
            o.iter()
                .map(|o| text(&o["org"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        text(&c["id"]),
        text(&c["status"]),
        text(&c["severity"]),
        text(&c["score"]),
        format!(
            "{}:{}",
            text(&c["indicator"]["type"]),
            text(&c["indicator"]["value"])
        ),
        orgs,
        text(&c["signals"]),
        text(&c["last_seen"]),
    ]
}

const CAMPAIGN_HEADERS: &[&str] = &[
    "CAMPAIGN",
    "STATUS",
    "SEVERITY",
    "SCORE",
    "INDICATOR",
    "ORGS",
    "SIGNALS",
    "LAST SEEN",
];

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection)?;
    let json = matches!(args.connection.format, Format::Json);
    let answer = match &args.what {
        QueryCommand::Signals {
            filters: f,
            kind,
            agent,
            indicator,
        } => {
            let mut query = filters(f);
            for (key, value) in [("kind", kind), ("agent", agent), ("indicator", indicator)] {
                if let Some(value) = value {
                    query.push((key, value.clone()));
                }
            }
            client.get("/api/v1/signals", &query)?
        }
        QueryCommand::Campaigns {
            filters: f,
            status,
            indicator,
        } => {
            let mut query = filters(f);
            query.push(("status", status.clone()));
            if let Some(value) = indicator {
                query.push(("indicator", value.clone()));
            }
            client.get("/api/v1/campaigns", &query)?
        }
        QueryCommand::Campaign { id } => {
            client.get(&format!("/api/v1/campaigns/{}", segment(id)), &[])?
        }
        QueryCommand::Incidents { filters: f, status } => {
            let mut query: Vec<_> = filters(f)
                .into_iter()
                .filter(|(k, _)| !matches!(*k, "since" | "until"))
                .collect();
            query.push(("status", status.clone()));
            client.get("/api/v1/incidents", &query)?
        }
        QueryCommand::Agents => client.get("/api/v1/agents", &[])?,
        QueryCommand::Indicator { value } => {
            client.get(&format!("/api/v1/indicators/{}", segment(value)), &[])?
        }
    };
    if json {
        println!("{answer}");
        return Ok(());
    }
    match &args.what {
        QueryCommand::Signals { .. } => print_signals(&answer),
        QueryCommand::Campaigns { .. } => {
            let rows: Vec<_> = answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(campaign_row)
                .collect();
            table(CAMPAIGN_HEADERS, &rows);
            more(&answer);
        }
        QueryCommand::Campaign { .. } => {
            table(CAMPAIGN_HEADERS, &[campaign_row(&answer["campaign"])]);
            println!();
            print_signals(&serde_json::json!({ "items": answer["signals"] }));
        }
        QueryCommand::Incidents { .. } => {
            let rows: Vec<_> = answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    vec![
                        text(&i["id"]),
                        text(&i["org"]),
                        text(&i["chain"]),
                        text(&i["status"]),
                        text(&i["severity"]),
                        format!("{}:{}", text(&i["key_type"]), text(&i["key"])),
                        i["steps"]
                            .as_array()
                            .map(|s| s.iter().map(text).collect::<Vec<_>>().join(" → "))
                            .unwrap_or_default(),
                        text(&i["last_seen"]),
                    ]
                })
                .collect();
            table(
                &[
                    "INCIDENT",
                    "ORG",
                    "CHAIN",
                    "STATUS",
                    "SEVERITY",
                    "KEY",
                    "STEPS",
                    "LAST SEEN",
                ],
                &rows,
            );
            more(&answer);
        }
        QueryCommand::Agents => {
            let rows: Vec<_> = answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    vec![
                        text(&a["id"]),
                        text(&a["org"]),
                        text(&a["label"]),
                        text(&a["agent_version"]),
                        text(&a["last_seen"]),
                        if a["revoked_at"].is_null() {
                            "active"
                        } else {
                            "revoked"
                        }
                        .into(),
                    ]
                })
                .collect();
            table(
                &["AGENT", "ORG", "LABEL", "VERSION", "LAST SEEN", "STATE"],
                &rows,
            );
        }
        QueryCommand::Indicator { value } => {
            println!(
                "{value}: {} signal(s){}, first seen {}, last seen {}",
                text(&answer["signals"]),
                if answer["truncated"].as_bool() == Some(true) {
                    " (newest counted)"
                } else {
                    ""
                },
                text(&answer["first_seen"]),
                text(&answer["last_seen"])
            );
            let rows: Vec<_> = answer["organisations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    vec![
                        text(&o["org"]),
                        text(&o["signals"]),
                        text(&o["first_seen"]),
                        text(&o["last_seen"]),
                        o["kinds"]
                            .as_array()
                            .map(|k| k.iter().map(text).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                &["ORG", "SIGNALS", "FIRST SEEN", "LAST SEEN", "KINDS"],
                &rows,
            );
            for campaign in answer["campaigns"].as_array().into_iter().flatten() {
                println!(
                    "campaign {} ({}, {}, score {})",
                    text(&campaign["id"]),
                    text(&campaign["status"]),
                    text(&campaign["severity"]),
                    text(&campaign["score"])
                );
            }
            for advisory in answer["advisories"].as_array().into_iter().flatten() {
                println!(
                    "advisory {} ({}, expires {})",
                    text(&advisory["id"]),
                    text(&advisory["severity"]),
                    text(&advisory["expires_at"])
                );
            }
        }
    }
    Ok(())
}

pub fn advisory(args: AdvisoryArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection)?;
    let json = matches!(args.connection.format, Format::Json);
    match args.what {
        AdvisoryCommand::Publish {
            kind,
            value,
            severity,
            description,
            expires_in,
        } => {
            let record = client.post(
                "/api/v1/advisories",
                &serde_json::json!({
                    "indicator": { "type": kind, "value": value },
                    "severity": severity,
                    "description": description,
                    "expires_in": expires_in,
                }),
            )?;
            if json {
                println!("{record}");
            } else {
                println!(
                    "advisory {} published (feed position {}), in force until {}",
                    text(&record["id"]),
                    text(&record["seq"]),
                    text(&record["expires_at"])
                );
            }
        }
        AdvisoryCommand::List { all } => {
            let mut rows = Vec::new();
            let mut all_items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("all", all.to_string()), ("limit", "1000".to_owned())];
                if let Some(cursor) = &cursor {
                    query.push(("cursor", cursor.clone()));
                }
                let page = client.get("/api/v1/advisories", &query)?;
                for a in page["items"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        text(&a["id"]),
                        format!(
                            "{}:{}",
                            text(&a["indicator"]["type"]),
                            text(&a["indicator"]["value"])
                        ),
                        text(&a["severity"]),
                        text(&a["expires_at"]),
                        if a["withdrawn_at"].is_null() {
                            "in force"
                        } else {
                            "withdrawn"
                        }
                        .into(),
                        text(&a["description"]),
                    ]);
                    all_items.push(a.clone());
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            if json {
                println!("{}", Value::Array(all_items));
            } else {
                table(
                    &[
                        "ADVISORY",
                        "INDICATOR",
                        "SEVERITY",
                        "EXPIRES",
                        "STATE",
                        "DESCRIPTION",
                    ],
                    &rows,
                );
            }
        }
        AdvisoryCommand::Withdraw { id } => {
            client.delete(&format!("/api/v1/advisories/{}", segment(&id)))?;
            if !json {
                println!("advisory {id} withdrawn");
            }
        }
    }
    Ok(())
}
