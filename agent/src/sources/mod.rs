//! Where the agent's observations come from. Each source turns what it watches into
//! events for the detectors: log files and their formats (`logs`), and the systemd
//! journal (`journald`).

pub mod files;
pub mod host;
pub mod journald;
pub mod logs;
pub mod network;
