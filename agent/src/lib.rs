//! The Vedetta agent, installed by member IT teams: it senses the host, turns what it sees
//! into summarised signals, and delivers them durably to the collector over QUIC with
//! mutual TLS.
//!
//! * [`cli`]: the command line (a contract, see DESIGN.md); [`config`]: the TOML file;
//! * [`enroll`]: key pair, certificate request, CA pinning; [`tls`]: both TLS setups;
//! * [`spool`]: the durable bounded queue; [`uplink`]: delivery to the collector;
//! * [`sources`]: what the agent observes (log files followed through rotation, their
//!   formats); [`detect`]: events, rules and the detection engine; [`pipeline`]: the two
//!   together; [`privacy`]: what may leave the host; [`replay`]: the pipeline on a file;
//! * [`advisories`]: the indicators pushed by the collector and listed by the member,
//!   on disk and shared by every source;
//! * [`health`]: heartbeat, `agent_health` and the sources' state; [`run`]: wiring;
//!   [`state`]: files on disk; [`status`]: what `vedetta-agent status` shows.
#![forbid(unsafe_code)]

pub mod advisories;
pub mod cli;
pub mod config;
pub mod detect;
pub mod enroll;
pub mod health;
pub mod pipeline;
pub mod privacy;
pub mod replay;
pub mod run;
pub mod sources;
pub mod spool;
pub mod state;
pub mod status;
pub mod tls;
pub mod uplink;
