//! The auditors' and administrators' commands that work on the data directory itself:
//! `audit verify|export`, `hold place|release|list`, `retention purge`, and the record
//! every administrative command leaves in the audit chain.

use super::{DataDir, Format, open_store, print_json};
use crate::audit::{AuditHead, NewAuditEntry};
use crate::config::CollectorConfig;
use crate::export;
use crate::store::{AuditFilter, Cursor, SqliteStore, Store};
use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use std::io::Write as _;
use vedetta_common::Timestamp;

/// Who runs a command: `cli:` and the login name of the process's user (from the
/// system's user database, not from the environment, which the caller controls), with
/// the invoking user when run through sudo by root.
pub fn cli_actor() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid-{uid}"), |user| user.name);
    match std::env::var("SUDO_USER") {
        Ok(invoker) if uid.is_root() && !invoker.is_empty() => {
            format!("cli:{name} (sudo by {invoker})")
        }
        _ => format!("cli:{name}"),
    }
}

/// The audit entry of an administrative act done from the command line, to attach to
/// the act with `SqliteStore::audit_next` (both commit together).
pub fn cli_act(action: &str, detail: serde_json::Value) -> NewAuditEntry {
    NewAuditEntry::act(Timestamp::now(), cli_actor(), "admin", action, detail)
}

/// Records a reading done from the command line (a verification, an export).
pub fn record_act(
    store: &mut SqliteStore,
    action: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .append_audit(&[NewAuditEntry::act(
            Timestamp::now(),
            cli_actor(),
            "admin",
            action,
            detail,
        )])
        .context("recording the act in the audit log")?;
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; name the first entry edited, deleted or moved. Exit 1 if any.
    Verify {
        #[command(flatten)]
        data: DataDir,
        /// A head printed by an earlier verify (SEQ:HASH): the log must still hold it
        /// (catches the deletion of the newest entries).
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write the whole log (or a time range) to standard output, in chain order.
    Export {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// From this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Suspend purging for an organisation's or a campaign's signals.
    Place {
        #[arg(
            long,
            conflicts_with = "campaign",
            required_unless_present = "campaign"
        )]
        org: Option<String>,
        #[arg(long)]
        campaign: Option<String>,
        /// Why (the case, the authority's request): kept in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Release a hold: purging resumes at the next run.
    Release {
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// List active holds (all with --all).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Purge now what the retention settings no longer keep (`serve` also does it every
    /// `[retention] purge_every`).
    Purge {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

fn parse_time(name: &str, text: Option<&String>) -> anyhow::Result<Option<Timestamp>> {
    text.map(|t| Timestamp::parse_rfc3339(t).map_err(|e| anyhow::anyhow!("--{name}: {e}")))
        .transpose()
}

pub fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            data,
            expect_head,
            format,
        } => {
            let head = expect_head
                .as_deref()
                .map(AuditHead::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expect-head: {e}"))?;
            let mut store = open_store(&data.data_dir)?;
            let verdict = store.verify_audit(head)?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&verdict)?),
                Format::Table => match (&verdict.problem, &verdict.head) {
                    (Some(problem), _) => println!(
                        "audit log NOT intact: entry {} ({:?}): {}",
                        problem.seq, problem.kind, problem.message
                    ),
                    (None, Some(head)) => println!(
                        "audit log intact: {} entries; head {head} (record it to check later with --expect-head)",
                        verdict.entries
                    ),
                    (None, None) => println!("audit log intact: empty"),
                },
            }
            // Recorded when it can be: a verification of a read-only copy still answers.
            if let Err(error) = record_act(
                &mut store,
                "audit.verify",
                serde_json::json!({ "ok": verdict.ok, "entries": verdict.entries }),
            ) {
                eprintln!("note: this verification is not in the audit log: {error:#}");
            }
            if !verdict.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Export {
            data,
            format,
            since,
            until,
        } => {
            let mut store = open_store(&data.data_dir)?;
            let mut filter = AuditFilter {
                since: parse_time("since", since.as_ref())?,
                until: parse_time("until", until.as_ref())?,
                oldest_first: true,
                limit: crate::store::MAX_PAGE,
                ..AuditFilter::default()
            };
            // Recorded first, so that the export holds its own record.
            record_act(
                &mut store,
                "export.audit",
                serde_json::json!({ "format": format!("{format:?}").to_lowercase() }),
            )?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut header = Some(&export::AUDIT_COLUMNS[..]);
            loop {
                let page = store.audit_log(&filter)?;
                match format {
                    ExportFormat::Csv => {
                        let rows: Vec<Vec<String>> =
                            page.items.iter().map(export::audit_record).collect();
                        out.write_all(&export::csv_rows(header.take(), &rows))?;
                    }
                    ExportFormat::Ndjson => {
                        for record in &page.items {
                            writeln!(out, "{}", record.to_json())?;
                        }
                    }
                }
                match page.next_cursor.as_deref().map(Cursor::decode) {
                    Some(Ok(cursor)) => filter.cursor = Some(cursor),
                    _ => break,
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}

pub fn hold(command: HoldCommand) -> anyhow::Result<()> {
    match command {
        HoldCommand::Place {
            org,
            campaign,
            reason,
            data,
            format,
        } => {
            let hold = crate::api::governance::new_hold(
                org,
                campaign,
                &reason,
                &cli_actor(),
                Timestamp::now(),
            )
            .map_err(anyhow::Error::msg)?;
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act("hold.place", serde_json::to_value(&hold)?));
            store.place_hold(&hold)?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&hold)?),
                Format::Table => println!("{}", hold.id),
            }
            Ok(())
        }
        HoldCommand::Release { id, data } => {
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act("hold.release", serde_json::json!({ "id": id })));
            if store
                .release_hold(&id, &cli_actor(), Timestamp::now())?
                .is_none()
            {
                bail!("no active hold {id}");
            }
            println!("hold {id} released");
            Ok(())
        }
        HoldCommand::List { all, data, format } => {
            let holds = open_store(&data.data_dir)?.holds(all)?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&holds)?),
                Format::Table => {
                    println!(
                        "{:<38} {:<9} {:<38} {:<20} {:<8} REASON",
                        "HOLD", "SCOPE", "TARGET", "PLACED BY", "STATE"
                    );
                    for hold in holds {
                        println!(
                            "{:<38} {:<9} {:<38} {:<20} {:<8} {}",
                            hold.id,
                            hold.scope,
                            hold.target,
                            hold.placed_by,
                            if hold.released_at.is_some() {
                                "released"
                            } else {
                                "active"
                            },
                            hold.reason
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

pub fn retention(command: RetentionCommand) -> anyhow::Result<()> {
    match command {
        RetentionCommand::Purge { data, format } => {
            let config = CollectorConfig::load(&data.data_dir)?;
            let mut store = open_store(&data.data_dir)?;
            let report = store.purge(
                Timestamp::now(),
                config.retention.retention_days,
                &cli_actor(),
            )?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&report)?),
                Format::Table => println!(
                    "{} signals removed; {} kept for held campaigns; organisations held: {}",
                    report.signals_removed,
                    report.signals_kept_for_campaigns,
                    if report.orgs_held.is_empty() {
                        "none".to_owned()
                    } else {
                        report.orgs_held.join(", ")
                    }
                ),
            }
            Ok(())
        }
    }
}
