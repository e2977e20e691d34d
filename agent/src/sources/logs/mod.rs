//! Log files as a source: [`tail`] follows files durably through rotation and restarts,
//! [`format`] parses the lines it returns, and [`live`] runs both, with the detection
//! pipeline, for each configured group of files.

pub mod format;
pub mod live;
pub mod tail;
