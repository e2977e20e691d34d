//! Where the agent's observations come from. Each source turns what it watches into
//! events for the detectors; today: log files and their formats (`logs`).

pub mod logs;
