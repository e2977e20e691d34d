//! Vedetta's shared vocabulary: the signal model that agents produce and the collector
//! stores, the versioned wire protocol between them, the one codec that turns protocol
//! messages into bytes (and back, only within explicit limits), and the identity helpers
//! both sides need to agree on who is talking.
//!
//! Everything here is pure logic with no sockets, files or clocks, except the two small
//! async frame helpers in [`codec`] that work on any `AsyncRead`/`AsyncWrite`, the
//! shutdown signal in [`shutdown`], and the service manager's notifications (systemd's
//! readiness and watchdog) in [`service`].
#![forbid(unsafe_code)]

pub mod address;
mod bounded;
pub mod codec;
pub mod duration;
pub mod files;
pub mod identity;
pub mod protocol;
pub mod service;
pub mod shutdown;
pub mod signal;

pub use signal::{AttributeValue, Indicator, IndicatorType, Severity, Signal, SignalId, Timestamp};
