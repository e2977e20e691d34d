//! The collector binary's admin commands against a real data directory.

use std::process::Command;

fn collector(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vedetta-collector"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run")
}

#[test]
fn init_creates_a_private_pki_and_refuses_to_run_twice() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let output = collector(&["init"], &data);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let fingerprint = text.split_whitespace().last().expect("fingerprint");
    assert_eq!(fingerprint.len(), 64);
    for secret in [
        "ca.key",
        "server.key",
        "vedetta.db",
        "vedetta.db-wal",
        "vedetta.db-shm",
    ]
    .into_iter()
    .filter(|name| data.join(name).exists())
    {
        let mode = std::fs::metadata(data.join(secret))
            .expect(secret)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    assert_eq!(
        std::fs::metadata(&data).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    let again = collector(&["init"], &data);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
}

#[test]
fn orgs_tokens_and_agents_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    assert!(collector(&["init"], &data).status.success());
    assert!(
        collector(
            &["org", "add", "comune-roma", "--name", "Comune di Roma"],
            &data
        )
        .status
        .success()
    );
    let duplicate = collector(&["org", "add", "comune-roma"], &data);
    assert!(!duplicate.status.success());
    let invalid = collector(&["org", "add", "Bad Name"], &data);
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("invalid org"));
    let token = collector(
        &["token", "create", "--org", "comune-roma", "--ttl", "1h"],
        &data,
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    assert!(token.starts_with("vdt_") && token.len() == 68, "{token}");
    // Only the token's hash is stored: not the token, in the database nor its WAL.
    let hash = vedetta_common::identity::sha256_hex(token.as_bytes());
    let mut files = std::fs::read(data.join("vedetta.db")).expect("db");
    files.extend(std::fs::read(data.join("vedetta.db-wal")).unwrap_or_default());
    let contains = |needle: &[u8]| files.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(token.as_bytes()));
    assert!(contains(hash.as_bytes()), "the hash is what is kept");
    let unknown_org = collector(&["token", "create", "--org", "nobody"], &data);
    assert!(!unknown_org.status.success());
    let revoke = collector(&["agent", "revoke", "nobody-1234"], &data);
    assert!(String::from_utf8_lossy(&revoke.stderr).contains("unknown agent"));
    let list = collector(&["agent", "list", "--format", "json"], &data);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
}
