//! File helpers both programs need: secrets created with mode 0600 from the start (never
//! written world-readable and chmod-ed afterwards), and state replaced atomically (temp
//! file, `sync_all`, rename, sync of the directory) so that a crash leaves the old or the
//! new version, never half of one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to a new file readable only by its owner; fails if the file exists,
/// so that a key is never silently replaced.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Replaces `path` with `contents` atomically, with the given permission bits.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let temporary = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    // A temp file left by a crash is stale by definition: start over.
    let _ = std::fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Creates a directory (and its parents) readable only by its owner.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_0600_and_never_replaced() {
        let dir = std::env::temp_dir().join(format!("vedetta-files-{}", std::process::id()));
        create_private_dir(&dir).expect("dir");
        let key = dir.join("key");
        let _ = std::fs::remove_file(&key);
        write_private(&key, b"secret").expect("write");
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private(&key, b"other").is_err());
        write_atomic(&dir.join("state"), b"one", 0o600).expect("atomic");
        write_atomic(&dir.join("state"), b"two", 0o600).expect("atomic again");
        assert_eq!(std::fs::read(dir.join("state")).expect("read"), b"two");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
