//! Log sensing: the formats of the lines (`format`) and, for live operation, the sources
//! that read them.

pub mod format;
pub mod live;
pub mod tail;
