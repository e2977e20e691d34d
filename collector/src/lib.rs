//! The Vedetta collector, run by the operations centre: authenticates agents by
//! certificate, stores their signals durably, and (in later modules) correlates them,
//! serves analysts and keeps the audit trail.
//!
//! * [`cli`]: the command line (a contract, see DESIGN.md);
//! * [`pki`]: the collector's own CA and the certificates it signs;
//! * [`ingest`]: the QUIC endpoint (agent sessions), [`enroll`]: enrollment on it;
//! * [`writer`]: group commit of signal batches; [`store`]: the storage interface;
//! * [`server`]: `serve`, wiring it all together.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod dashboard;
pub mod demo;
pub mod enroll;
pub mod export;
pub mod feed;
mod files;
pub mod ingest;
pub mod pki;
pub mod query;
pub mod server;
pub mod store;
pub mod writer;
