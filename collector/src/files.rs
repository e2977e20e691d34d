//! Permission helpers for files the collector creates through other libraries (SQLite).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Restricts an existing file to its owner.
pub fn set_private(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
