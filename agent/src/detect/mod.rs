//! Detection: log records become security events ([`events`]), and rules (data, see
//! [`rules`]) turn streams of events into few, summarised signals ([`engine`]).
//! Everything here is pure: input and event time in, signals out.

pub mod engine;
pub mod events;
pub mod files;
pub mod network;
pub mod rules;
