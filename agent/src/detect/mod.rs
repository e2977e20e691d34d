//! Detection: log records become security events ([`events`]), and rules (data, see
//! [`rules`]) turn streams of events into few, summarised signals ([`engine`]).
//! Advisories become a lookup table ([`advisories`]) that the network and file
//! detectors consult, and [`ioc`] for log events.
//! Everything here is pure: input and event time in, signals out.

pub mod advisories;
pub mod engine;
pub mod events;
pub mod files;
pub mod ioc;
pub mod network;
pub mod rules;
