//! The command line. Names are a contract (DESIGN.md): scripts and users rely on them.
//! Every administrative command is recorded in the audit log, in the transaction of the
//! act itself ([`governance::cli_act`]).

mod governance;

use governance::cli_act;

use crate::config::{self, CollectorConfig};
use crate::enroll;
use crate::files::set_private;
use crate::pki::{self, PkiPaths};
use crate::server::{self, database_path};
use crate::store::{SqliteStore, Store};
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vedetta_common::Timestamp;
use vedetta_common::duration::parse_duration;
use vedetta_common::files::create_private_dir;
use vedetta_common::identity::validate_name;
use vedetta_common::service::{self, Watchdog};

#[derive(Debug, Parser)]
#[command(
    name = "vedetta-collector",
    version,
    about = "Vedetta collector: authenticates agents, stores and correlates their signals"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct DataDir {
    /// The collector's data directory (keys, database, configuration).
    #[arg(long, env = "VEDETTA_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the CA, the server certificate and the database; print the CA fingerprint.
    Init {
        #[command(flatten)]
        data: DataDir,
        /// UDP address agents connect to.
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// TCP address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8443")]
        http: SocketAddr,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Serve agents until SIGTERM or SIGINT.
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Override the configured UDP address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override the configured TCP address of the HTTPS API.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Manage organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage enrolled agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage the people and scripts of the HTTP API (each gets a bearer token).
    #[command(subcommand)]
    User(UserCommand),
    /// Ask a running collector over its HTTPS API (the analysts' CLI).
    Query(crate::query::QueryArgs),
    /// Publish, list or withdraw advisories over the HTTPS API.
    Advisory(crate::query::AdvisoryArgs),
    /// Verify or export the audit log.
    #[command(subcommand)]
    Audit(governance::AuditCommand),
    /// Legal holds: suspend purging for an organisation or a campaign.
    #[command(subcommand)]
    Hold(governance::HoldCommand),
    /// Retention of signals (see `[retention]` and `org retention`).
    #[command(subcommand)]
    Retention(governance::RetentionCommand),
    /// The quick start: a collector and agents of three organisations on loopback.
    Demo {
        /// Folder for the demo's data (recreated on each run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Exit once the picture is printed instead of running until Ctrl-C.
        #[arg(long)]
        exit_when_done: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Add an organisation.
    Add {
        /// Short id: lowercase letters, digits, '-', '_', '.'.
        org: String,
        #[arg(long)]
        name: Option<String>,
        /// The member's own public addresses or networks (repeatable): never correlated
        /// as an attacker's.
        #[arg(long = "address", value_name = "ADDRESS|CIDR")]
        addresses: Vec<String>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Replace an organisation's declared addresses (none: clear them).
    Addresses {
        org: String,
        #[arg(value_name = "ADDRESS|CIDR")]
        addresses: Vec<String>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Set how many days an organisation's signals are kept (0: forever), or go back to
    /// the collector's `[retention] retention_days` with --default.
    Retention {
        org: String,
        #[arg(long, conflicts_with = "default", required_unless_present = "default")]
        days: Option<u32>,
        #[arg(long)]
        default: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// List organisations.
    List {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a one-time enrollment token for an organisation and print it.
    Create {
        #[arg(long)]
        org: String,
        /// How long the token stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List enrolled agents with their health.
    List {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Revoke an agent: its live connection is closed and it is refused from then on.
    Revoke {
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and print their API token (shown once; only its hash is kept).
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "analyst", "auditor", "member"])]
        role: String,
        /// The organisation of a `member`.
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List users (never their tokens).
    List {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Revoke a user's token at once.
    Revoke {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// Checks the addresses a member declares (an address or a network each).
fn check_addresses(addresses: &[String]) -> anyhow::Result<Vec<String>> {
    addresses
        .iter()
        .map(|text| {
            let text = text.trim();
            if let Ok(address) = text.parse::<std::net::IpAddr>() {
                Ok(address.to_string())
            } else if let Ok(network) = text.parse::<ipnet::IpNet>() {
                Ok(network.trunc().to_string())
            } else {
                bail!("{text:?} is not an address or a network (CIDR)")
            }
        })
        .collect()
}

fn user_command(command: UserCommand) -> anyhow::Result<()> {
    use crate::store::{ApiUser, Role};
    match command {
        UserCommand::Add {
            name,
            role,
            org,
            data,
            format,
        } => {
            validate_name("user", &name).map_err(anyhow::Error::msg)?;
            let role = Role::parse(&role).context("role")?;
            match (role, &org) {
                (Role::Member, None) => bail!("a member belongs to an organisation: give --org"),
                (Role::Admin | Role::Analyst | Role::Auditor, Some(_)) => {
                    bail!("--org is for members only: other roles see every organisation")
                }
                _ => {}
            }
            let token = crate::api::auth::new_token()
                .map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let user = ApiUser {
                name: name.clone(),
                role,
                org,
                created_at: Timestamp::now(),
                revoked_at: None,
            };
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act(
                "user.add",
                serde_json::json!({ "user": name, "role": role, "org": user.org }),
            ));
            store.add_user(&user, &crate::api::auth::token_hash(&token))?;
            match format {
                Format::Json => print_json(&serde_json::json!({
                    "name": name, "role": role, "org": user.org, "token": token,
                })),
                Format::Table => println!("{token}"),
            }
            Ok(())
        }
        UserCommand::List { data, format } => {
            let users = open_store(&data.data_dir)?.users()?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&users)?),
                Format::Table => {
                    println!(
                        "{:<24} {:<8} {:<16} {:<36} STATE",
                        "USER", "ROLE", "ORG", "CREATED"
                    );
                    for user in users {
                        println!(
                            "{:<24} {:<8} {:<16} {:<36} {}",
                            user.name,
                            user.role.as_str(),
                            user.org.as_deref().unwrap_or("-"),
                            user.created_at,
                            if user.revoked_at.is_some() {
                                "revoked"
                            } else {
                                "active"
                            }
                        );
                    }
                }
            }
            Ok(())
        }
        UserCommand::Revoke { name, data } => {
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act("user.revoke", serde_json::json!({ "user": name })));
            if !store.revoke_user(&name, Timestamp::now())? {
                bail!("unknown user {name}");
            }
            println!("user {name} revoked");
            Ok(())
        }
    }
}

pub(crate) fn open_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    let path = database_path(data_dir);
    if !path.exists() {
        bail!(
            "no database at {} (run `vedetta-collector init --data-dir {}` first)",
            path.display(),
            data_dir.display()
        );
    }
    Ok(SqliteStore::open(&path)?)
}

pub(crate) fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            data,
            listen,
            http,
            format,
        } => init(&data.data_dir, listen, http, format),
        Command::Serve { data, listen, http } => serve(&data.data_dir, listen, http),
        Command::User(command) => user_command(command),
        Command::Query(args) => crate::query::run(args),
        Command::Advisory(args) => crate::query::advisory(args),
        Command::Demo {
            data_dir,
            exit_when_done,
        } => crate::demo::run(data_dir, exit_when_done),
        Command::Audit(command) => governance::audit(command),
        Command::Hold(command) => governance::hold(command),
        Command::Retention(command) => governance::retention(command),
        Command::Org(OrgCommand::Retention {
            org,
            days,
            default: _,
            data,
        }) => {
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act(
                "org.retention",
                serde_json::json!({ "org": org, "retention_days": days }),
            ));
            store.set_org_retention(&org, days)?;
            match days {
                Some(0) => println!("org {org}: signals kept forever"),
                Some(days) => println!("org {org}: signals kept {days} days"),
                None => println!("org {org}: the collector's retention applies"),
            }
            Ok(())
        }
        Command::Org(OrgCommand::Add {
            org,
            name,
            addresses,
            data,
        }) => {
            validate_name("org", &org).map_err(anyhow::Error::msg)?;
            let addresses = check_addresses(&addresses)?;
            let name = name.unwrap_or_else(|| org.clone());
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act(
                "org.add",
                serde_json::json!({ "org": org, "name": name }),
            ));
            store.add_org(&org, &name, Timestamp::now())?;
            if !addresses.is_empty() {
                store.audit_next(cli_act(
                    "org.addresses",
                    serde_json::json!({ "org": org, "addresses": addresses }),
                ));
                store.set_org_addresses(&org, &addresses)?;
            }
            println!("org {org} added");
            Ok(())
        }
        Command::Org(OrgCommand::Addresses {
            org,
            addresses,
            data,
        }) => {
            let addresses = check_addresses(&addresses)?;
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act(
                "org.addresses",
                serde_json::json!({ "org": org, "addresses": addresses }),
            ));
            store.set_org_addresses(&org, &addresses)?;
            println!(
                "org {org}: {} declared address(es); a running collector applies them at its next start",
                addresses.len()
            );
            Ok(())
        }
        Command::Org(OrgCommand::List { data, format }) => {
            let orgs = open_store(&data.data_dir)?.orgs()?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&orgs)?),
                Format::Table => {
                    println!("{:<24} {:<40} {:<36} ADDRESSES", "ORG", "NAME", "CREATED");
                    for org in orgs {
                        println!(
                            "{:<24} {:<40} {:<36} {}",
                            org.id,
                            org.name,
                            org.created_at,
                            org.addresses.join(" ")
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            org,
            ttl,
            data,
            format,
        }) => {
            let ttl = parse_duration(&ttl).map_err(anyhow::Error::msg)?;
            let (token, hash) =
                enroll::new_token().map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let now = Timestamp::now();
            let expires = Timestamp(
                now.0
                    .saturating_add(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX)),
            );
            let mut store = open_store(&data.data_dir)?;
            // The token itself is a secret: the log keeps which org and until when.
            store.audit_next(cli_act(
                "token.create",
                serde_json::json!({ "org": org, "expires_at": expires }),
            ));
            store.create_enrollment_token(&hash, &org, now, expires)?;
            match format {
                Format::Json => print_json(&serde_json::json!({
                    "token": token, "org": org, "expires_at": expires,
                })),
                Format::Table => println!("{token}"),
            }
            Ok(())
        }
        Command::Agent(AgentCommand::List { data, format }) => {
            let agents = open_store(&data.data_dir)?.agents()?;
            match format {
                Format::Json => print_json(&serde_json::to_value(&agents)?),
                Format::Table => {
                    println!(
                        "{:<28} {:<16} {:<20} {:<8} {:>6} {:>6} {:<26} {:<8} HOST",
                        "AGENT", "ORG", "LABEL", "VERSION", "SPOOL", "DROPS", "LAST SEEN", "STATE"
                    );
                    for agent in agents {
                        let dash = || "-".to_owned();
                        println!(
                            "{:<28} {:<16} {:<20} {:<8} {:>6} {:>6} {:<26} {:<8} {}",
                            agent.id,
                            agent.org,
                            agent.label.chars().take(20).collect::<String>(),
                            agent.agent_version.clone().unwrap_or_else(dash),
                            agent.spool_depth.map_or_else(dash, |n| n.to_string()),
                            agent.drops_total.map_or_else(dash, |n| n.to_string()),
                            agent.last_seen.map_or_else(dash, |t| t.to_rfc3339()),
                            if agent.revoked_at.is_some() {
                                "revoked"
                            } else {
                                "active"
                            },
                            agent.inventory.as_ref().map_or_else(dash, |host| format!(
                                "{}, kernel {}, {}, {} CPUs, {} MiB",
                                host.os, host.kernel, host.arch, host.cpus, host.memory_mib
                            )),
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Agent(AgentCommand::Revoke { id, data }) => {
            let mut store = open_store(&data.data_dir)?;
            store.audit_next(cli_act("agent.revoke", serde_json::json!({ "agent": id })));
            if !store.revoke_agent(&id, Timestamp::now())? {
                bail!("unknown agent {id}");
            }
            println!("agent {id} revoked");
            Ok(())
        }
    }
}

fn init(
    data_dir: &Path,
    listen: SocketAddr,
    http: SocketAddr,
    format: Format,
) -> anyhow::Result<()> {
    let config_path = data_dir.join(config::FILE_NAME);
    if config_path.exists() {
        bail!(
            "{} already exists: this data directory is initialised",
            config_path.display()
        );
    }
    create_private_dir(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    // A distinct CA name per collector makes "unknown issuer" errors say what they mean.
    let ca_name = format!(
        "Vedetta collector CA {}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let fingerprint = pki::create(&PkiPaths::in_dir(data_dir), &ca_name)?;
    let database = database_path(data_dir);
    SqliteStore::open(&database)?;
    set_private(&database)?;
    std::fs::write(&config_path, CollectorConfig::new(listen, http).to_toml())?;
    match format {
        Format::Json => print_json(&serde_json::json!({
            "data_dir": data_dir, "ca_fingerprint": fingerprint, "listen": listen, "http": http,
        })),
        Format::Table => {
            println!("collector initialised in {}", data_dir.display());
            println!("CA fingerprint (give it to agents with their token): {fingerprint}");
        }
    }
    Ok(())
}

fn serve(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Caught before anything starts: SIGTERM while starting is a clean stop too.
        let termination = vedetta_common::shutdown::Termination::listen()?;
        let collector = server::start(data_dir, listen, http).await?;
        // One machine-readable line on stdout tells scripts (and tests) where we listen.
        println!(
            "{}",
            serde_json::json!({
                "event": "ready",
                "quic": collector.quic_addr.to_string(),
                "https": collector.http_addr.to_string(),
                "ca_fingerprint": collector.ca_fingerprint,
            })
        );
        // With Type=notify, systemd counts the service as started only now; its watchdog
        // is fed for as long as the writer and the store answer.
        service::ready();
        let context = Arc::clone(&collector.context);
        let watchdog = Watchdog::start(move || server::alive(Arc::clone(&context)));
        termination.wait().await;
        watchdog.stop().await;
        service::stopping();
        collector.stop().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
