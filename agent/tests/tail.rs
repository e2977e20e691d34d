//! The log tailer with real files in temp folders: rotation of both kinds, restarts from
//! the checkpoint file, partial, long, binary and invalid lines, unreadable paths, and a
//! writer racing the reader through rotations.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vedetta_agent::sources::logs::tail::{
    Line, READ_CHUNK, TailCondition, TailConfig, TailError, TailStats, Tailer,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn config(paths: &[&Path]) -> TailConfig {
    TailConfig {
        paths: paths
            .iter()
            .map(|path| path.to_string_lossy().into_owned())
            .collect(),
        ..TailConfig::default()
    }
}

fn from_start(paths: &[&Path]) -> TailConfig {
    TailConfig {
        start_at_end: false,
        ..config(paths)
    }
}

fn appender(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append")
}

fn append(path: &Path, text: &str) {
    appender(path).write_all(text.as_bytes()).expect("append");
}

fn numbered(range: std::ops::Range<usize>) -> String {
    range.map(|n| format!("line {n:06}\n")).collect()
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines.iter().map(|line| line.text.clone()).collect()
}

fn strings(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("line {n:06}")).collect()
}

/// Polls until `count` lines have come (or the deadline passes), then once more to catch
/// any extra line.
fn poll_for(tailer: &mut Tailer, count: usize) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    while lines.len() < count && Instant::now() < deadline {
        let new = tailer.poll(10_000);
        if new.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        lines.extend(texts(&new));
    }
    lines.extend(texts(&tailer.poll(10_000)));
    lines
}

fn open_tailer(config: TailConfig, checkpoints: &Path) -> Tailer {
    Tailer::new(config, checkpoints.to_owned()).expect("tailer")
}

#[test]
fn configuration_has_documented_defaults_and_refuses_unknown_keys() {
    let config: TailConfig = toml::from_str("paths = [\"/var/log/nginx/*.log\"]").expect("toml");
    assert_eq!(
        config,
        TailConfig {
            paths: vec!["/var/log/nginx/*.log".into()],
            ..TailConfig::default()
        }
    );
    assert!(config.start_at_end);
    assert_eq!(
        (config.max_line_bytes, config.fingerprint_bytes),
        (65_536, 256)
    );
    assert!(toml::from_str::<TailConfig>("paths = []\nmax_lines_bytes = 5").is_err());
    let dir = tempfile::tempdir().expect("tempdir");
    let invalid = TailConfig {
        paths: vec!["/var/log/[".into()],
        ..TailConfig::default()
    };
    assert!(matches!(
        Tailer::new(invalid, dir.path().join("tail.json")),
        Err(TailError::Pattern { .. })
    ));
}

#[test]
fn short_file_is_identified_by_inode_and_prefix_then_by_fingerprint_once_it_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    append(&log, "one\n");

    let mut tailer = open_tailer(from_start(&[&log]), &checkpoints);
    assert_eq!(poll_for(&mut tailer, 1), ["one"]);
    tailer.commit().expect("commit");
    drop(tailer);

    // Grows past the fingerprint while we are down: resumed, not re-read.
    append(&log, &numbered(0..40));
    let mut tailer = open_tailer(from_start(&[&log]), &checkpoints);
    assert_eq!(poll_for(&mut tailer, 40), strings(0..40));
    tailer.commit().expect("commit");
    drop(tailer);

    // Same inode, other content, longer than our position: the fingerprint tells it apart,
    // and it is read from its start.
    let inode = std::fs::metadata(&log).expect("metadata").ino();
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("rewrite");
    file.write_all(numbered(100..160).as_bytes())
        .expect("write");
    drop(file);
    assert_eq!(std::fs::metadata(&log).expect("metadata").ino(), inode);
    let mut tailer = open_tailer(from_start(&[&log]), &checkpoints);
    assert_eq!(poll_for(&mut tailer, 60), strings(100..160));
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    let mut writer = appender(&log);
    let mut tailer = open_tailer(config(&[&log]), &checkpoints);
    assert!(tailer.poll(100).is_empty());

    writer.write_all(numbered(0..3).as_bytes()).expect("write");
    assert_eq!(poll_for(&mut tailer, 3), strings(0..3));

    // The writer has not reopened yet: it keeps writing to the renamed file.
    std::fs::rename(&log, dir.path().join("app.log.1")).expect("rename");
    writer.write_all(numbered(3..5).as_bytes()).expect("write");
    let mut new_writer = appender(&log);
    new_writer
        .write_all(numbered(5..7).as_bytes())
        .expect("write");
    let mut lines = poll_for(&mut tailer, 4);
    writer.write_all(numbered(7..8).as_bytes()).expect("write");
    lines.extend(poll_for(&mut tailer, 1));
    lines.sort();
    assert_eq!(lines, strings(3..8));
    assert_eq!(tailer.stats().rotations, 1);
    assert_eq!(tailer.stats().open_files, 2);
}

#[test]
fn copytruncate_reads_the_file_again_from_its_start_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    let writer = appender(&log);
    let mut tailer = open_tailer(config(&[&log]), &checkpoints);
    assert!(tailer.poll(100).is_empty());

    (&writer)
        .write_all(numbered(0..50).as_bytes())
        .expect("write");
    assert_eq!(poll_for(&mut tailer, 50), strings(0..50));

    // Shorter than our position after the truncation.
    std::fs::copy(&log, dir.path().join("app.log.1")).expect("copy");
    writer.set_len(0).expect("truncate");
    (&writer)
        .write_all(numbered(50..53).as_bytes())
        .expect("write");
    assert_eq!(poll_for(&mut tailer, 3), strings(50..53));

    // Longer than our position: only the first bytes tell.
    std::fs::copy(&log, dir.path().join("app.log.1")).expect("copy");
    writer.set_len(0).expect("truncate");
    (&writer)
        .write_all(numbered(53..153).as_bytes())
        .expect("write");
    assert_eq!(poll_for(&mut tailer, 100), strings(53..153));
    assert_eq!(tailer.stats().truncations, 2);
}

#[test]
fn copytruncate_with_the_copy_in_the_paths_reads_unread_lines_from_the_copy_once() {
    for see_copy_before_truncation in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("app.log");
        let pattern = dir.path().join("app.log*");
        let checkpoints = dir.path().join("tail.json");
        let writer = appender(&log);
        let mut tailer = open_tailer(config(&[&pattern]), &checkpoints);
        assert!(tailer.poll(100).is_empty());

        (&writer)
            .write_all(numbered(0..100).as_bytes())
            .expect("write");
        assert_eq!(texts(&tailer.poll(40)), strings(0..40));
        std::fs::copy(&log, dir.path().join("app.log.1")).expect("copy");
        if see_copy_before_truncation {
            assert!(tailer.poll(0).is_empty());
        }
        writer.set_len(0).expect("truncate");
        (&writer)
            .write_all(numbered(100..110).as_bytes())
            .expect("write");
        let deadline = Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        while lines.len() < 70 && Instant::now() < deadline {
            lines.extend(tailer.poll(1000));
        }
        lines.extend(tailer.poll(1000));
        let from_other_paths: Vec<&Line> = lines
            .iter()
            .filter(|line| *line.path != *log.to_string_lossy())
            .collect();
        assert!(from_other_paths.is_empty(), "{from_other_paths:?}");
        let mut lines = texts(&lines);
        lines.sort();
        assert_eq!(lines, strings(40..110), "{see_copy_before_truncation}");
    }
}

#[test]
fn restart_resumes_at_the_last_commit_and_reads_files_found_later_from_their_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.log");
    let pattern = dir.path().join("*.log");
    let checkpoints = dir.path().join("tail.json");
    append(&old, "history before the first start\n");

    let mut tailer = open_tailer(config(&[&pattern]), &checkpoints);
    assert!(tailer.poll(100).is_empty(), "first start begins at the end");
    append(&old, "a1\na2\n");
    assert_eq!(poll_for(&mut tailer, 2), ["a1", "a2"]);
    tailer.commit().expect("commit");
    append(&old, "a3\n");
    assert_eq!(poll_for(&mut tailer, 1), ["a3"]);
    drop(tailer); // a3 returned, never committed

    append(&dir.path().join("while_down.log"), "d1\n");
    let mut tailer = open_tailer(config(&[&pattern]), &checkpoints);
    let mut lines = poll_for(&mut tailer, 2);
    lines.sort();
    assert_eq!(lines, ["a3", "d1"]);
    append(&dir.path().join("later.log"), "n1\nn2\n");
    assert_eq!(poll_for(&mut tailer, 2), ["n1", "n2"]);
    tailer.commit().expect("commit");
    drop(tailer);

    let mut tailer = open_tailer(config(&[&pattern]), &checkpoints);
    assert!(
        poll_for(&mut tailer, 0).is_empty(),
        "everything was committed"
    );
}

#[test]
fn restart_in_the_middle_of_a_rename_rotation_finds_the_old_file_by_its_inode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    append(&log, &numbered(0..3));
    let mut tailer = open_tailer(from_start(&[&log]), &checkpoints);
    assert_eq!(poll_for(&mut tailer, 3), strings(0..3));
    tailer.commit().expect("commit");
    drop(tailer);

    let rotated = dir.path().join("app.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    append(&rotated, &numbered(3..5));
    append(&log, &numbered(5..7));
    let mut tailer = open_tailer(from_start(&[&log]), &checkpoints);
    let mut lines = poll_for(&mut tailer, 4);
    lines.sort();
    assert_eq!(lines, strings(3..7));
}

#[test]
fn partial_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let mut tailer = open_tailer(from_start(&[&log]), &dir.path().join("tail.json"));
    append(&log, "hel");
    assert!(tailer.poll(10).is_empty());
    append(&log, "lo wor");
    assert!(tailer.poll(10).is_empty());
    append(&log, "ld\nnext");
    assert_eq!(texts(&tailer.poll(10)), ["hello world"]);
    append(&log, "\n");
    assert_eq!(texts(&tailer.poll(10)), ["next"]);
}

#[test]
fn a_10_mb_line_or_binary_file_is_cut_skipped_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let binary = dir.path().join("blob.log");
    let checkpoints = dir.path().join("tail.json");
    let config = from_start(&[&dir.path().join("*.log")]);
    let max_line = config.max_line_bytes;
    let bound = 2 * (max_line + READ_CHUNK);
    let mut tailer = open_tailer(config.clone(), &checkpoints);

    let mut seed: u32 = 7;
    let mut lines = Vec::new();
    for _ in 0..10 {
        append(&log, &"x".repeat(1 << 20));
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match (seed >> 24) as u8 {
                    b'\n' => 0,
                    byte => byte,
                }
            })
            .collect();
        appender(&binary).write_all(&noise).expect("write");
        lines.extend(tailer.poll(100));
        assert!(
            tailer.buffered_bytes() <= bound,
            "{}",
            tailer.buffered_bytes()
        );
    }
    assert_eq!(lines.len(), 2, "one cut line per file, nothing more");
    for line in &lines {
        assert!(line.truncated);
        // Cut at `max_line` bytes of the file (invalid bytes then widen to U+FFFD).
        assert!(line.text.chars().count() <= max_line);
    }
    let long = lines.iter().find(|line| line.path.ends_with("app.log"));
    assert_eq!(long.map(|line| line.text.len()), Some(max_line));

    // The rest of the long line is skipped, also across a restart.
    tailer.commit().expect("commit");
    drop(tailer);
    append(&log, &"y".repeat(1000));
    let mut tailer = open_tailer(config, &checkpoints);
    assert!(tailer.poll(100).is_empty());
    append(&log, "\nafter\n");
    assert_eq!(poll_for(&mut tailer, 1), ["after"]);
    assert!(tailer.buffered_bytes() <= bound);
}

#[test]
fn a_cut_never_splits_a_character() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let config = TailConfig {
        max_line_bytes: 999,
        ..from_start(&[&log])
    };
    let mut tailer = open_tailer(config, &dir.path().join("tail.json"));
    append(&log, &format!("{}\n", "é".repeat(1000)));
    let lines = tailer.poll(10);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].text, "é".repeat(499));
    assert!(lines[0].truncated);
    let stats = tailer.stats();
    assert_eq!((stats.truncated_lines, stats.invalid_utf8_lines), (1, 0));
}

#[test]
fn invalid_utf8_is_converted_lossily_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let mut tailer = open_tailer(from_start(&[&log]), &dir.path().join("tail.json"));
    appender(&log)
        .write_all(b"ok\n\xff\xfe bad\nfine\n")
        .expect("write");
    assert_eq!(
        texts(&tailer.poll(10)),
        ["ok", "\u{fffd}\u{fffd} bad", "fine"]
    );
    let stats = tailer.stats();
    assert_eq!((stats.lines, stats.invalid_utf8_lines), (3, 1));
}

#[test]
fn unreadable_and_deleted_files_are_counted_once_and_the_others_keep_being_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.log");
    let other = dir.path().join("other.log");
    append(&good, "g1\n");
    append(&other, "o1\n");
    std::fs::create_dir(dir.path().join("folder.log")).expect("dir");
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("dangling.log"))
        .expect("symlink");
    let looping = dir.path().join("loop.log");
    std::os::unix::fs::symlink(&looping, &looping).expect("symlink");
    // A FIFO must be skipped without ever blocking the poll.
    let fifo = dir.path().join("fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");

    let config = TailConfig {
        rotated_grace: Duration::ZERO,
        ..from_start(&[&dir.path().join("*.log")])
    };
    let mut tailer = open_tailer(config, &dir.path().join("tail.json"));
    let mut lines = poll_for(&mut tailer, 2);
    lines.sort();
    assert_eq!(lines, ["g1", "o1"]);
    for _ in 0..5 {
        assert!(tailer.poll(10).is_empty());
    }
    assert_eq!(
        tailer.stats().errors,
        2,
        "dangling symlink and loop, once each"
    );
    assert_eq!(tailer.stats().open_files, 2);

    // Deleted with a last line its writer never finished: returned when it is closed.
    append(&good, "g2 unfinished");
    assert!(tailer.poll(10).is_empty());
    std::fs::remove_file(&good).expect("delete");
    append(&other, "o2\n");
    let mut lines = poll_for(&mut tailer, 2);
    lines.sort();
    assert_eq!(lines, ["g2 unfinished", "o2"]);
    assert_eq!(tailer.stats().open_files, 1, "deleted file closed");
    assert_eq!(tailer.stats().errors, 2);
}

#[test]
fn the_condition_tells_missing_files_from_unreadable_ones_and_from_followed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let dangling = dir.path().join("dangling.log");
    std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).expect("symlink");
    let pattern = dir.path().join("dangl*.log");
    let mut tailer = open_tailer(from_start(&[&log, &pattern]), &dir.path().join("tail.json"));
    assert_eq!(
        tailer.condition(),
        TailCondition::default(),
        "before a poll"
    );
    assert!(tailer.poll(10).is_empty());
    let condition = tailer.condition();
    assert_eq!(condition.following, 0);
    assert_eq!(condition.unmatched, [log.to_string_lossy().into_owned()]);
    assert_eq!(condition.failing.len(), 1);
    assert_eq!(condition.failing[0].0, dangling.to_string_lossy());
    assert!(
        condition.failing[0].1.contains("No such file"),
        "{condition:?}"
    );

    append(&log, "one\n");
    assert_eq!(poll_for(&mut tailer, 1), ["one"]);
    let condition = tailer.condition();
    assert_eq!(condition.following, 1);
    assert!(condition.unmatched.is_empty(), "{condition:?}");
    assert_eq!(condition.failing.len(), 1, "the link still dangles");
}

#[test]
fn checkpoint_file_is_private_versioned_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    append(&log, "one\ntwo\n");
    let mut tailer = open_tailer(from_start(&[&log]), &checkpoints);
    assert_eq!(poll_for(&mut tailer, 2), ["one", "two"]);
    tailer.commit().expect("commit");

    let mode = std::fs::metadata(&checkpoints)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoints).expect("read")).expect("json");
    assert_eq!(json["version"], 1);
    let file = &json["files"][0];
    let metadata = std::fs::metadata(&log).expect("metadata");
    assert_eq!(file["dev"], metadata.dev());
    assert_eq!(file["inode"], metadata.ino());
    assert_eq!(file["offset"], 8);
    assert_eq!(file["path"], log.to_string_lossy().as_ref());
    assert_eq!(file["fingerprint"].as_str().map(str::len), Some(64));
}

#[test]
fn corrupt_checkpoint_is_an_error_but_a_leftover_temp_file_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    let temporary = dir.path().join(".tail.json.tmp");
    append(&log, "before\n");

    // Only a temp file from an interrupted first commit: a first start.
    std::fs::write(&temporary, "{\"version\":1,\"fi").expect("write");
    let mut tailer = open_tailer(config(&[&log]), &checkpoints);
    assert!(tailer.poll(10).is_empty(), "first start: at the end");
    append(&log, "after\n");
    assert_eq!(poll_for(&mut tailer, 1), ["after"]);
    tailer.commit().expect("commit");
    assert!(!temporary.exists());
    drop(tailer);
    let good = std::fs::read(&checkpoints).expect("read");

    // A temp file beside a whole checkpoint file: the checkpoint is used.
    std::fs::write(&temporary, "garbage").expect("write");
    append(&log, "next\n");
    let mut tailer = open_tailer(config(&[&log]), &checkpoints);
    assert_eq!(poll_for(&mut tailer, 1), ["next"]);
    drop(tailer);

    let half = &good[..good.len() / 2];
    for (contents, expect_too_new) in [
        (half.to_vec(), false),
        (b"not json".to_vec(), false),
        (Vec::new(), false),
        (b"{\"version\":1,\"files\":[{\"dev\":1}]}".to_vec(), false),
        (b"{\"version\":99,\"files\":[]}".to_vec(), true),
    ] {
        std::fs::write(&checkpoints, &contents).expect("write");
        match Tailer::new(config(&[&log]), checkpoints.clone()) {
            Err(TailError::CheckpointTooNew { version: 99, .. }) if expect_too_new => {}
            Err(TailError::CorruptCheckpoint { .. }) if !expect_too_new => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&contents)),
        }
    }
}

#[test]
fn positions_of_gone_files_are_kept_until_forget_after() {
    for (forget_after, kept) in [(Duration::ZERO, false), (Duration::from_secs(3600), true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone.log");
        let checkpoints = dir.path().join("tail.json");
        append(&gone, "g1\n");
        let config = TailConfig {
            rotated_grace: Duration::ZERO,
            forget_after,
            ..from_start(&[&dir.path().join("*.log")])
        };
        let mut tailer = open_tailer(config, &checkpoints);
        assert_eq!(poll_for(&mut tailer, 1), ["g1"]);
        std::fs::remove_file(&gone).expect("delete");
        assert!(tailer.poll(10).is_empty());
        assert_eq!(tailer.stats().open_files, 0);
        tailer.commit().expect("commit");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&checkpoints).expect("read")).expect("json");
        let files = json["files"].as_array().map(Vec::len);
        assert_eq!(files, Some(usize::from(kept)), "{forget_after:?}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rotation {
    Rename,
    CopyTruncate,
}

/// A writer thread appends numbered lines and rotates the file every `PER_FILE` lines;
/// the reader polls until it has every line, committing after each poll, and (if
/// `restart`) drops and recreates the tailer half way. Every line must come exactly once.
///
/// The writer rotates only once the reader has read from the current file, as real
/// rotation periods (hours) dwarf the poll interval (250 ms): with `follow_only_live`,
/// where the pattern matches `app.log` only and rotated files are read to their end
/// through the handle kept open (or, after a restart, found by inode), a file rotated
/// away before the tailer ever saw it could not be found at all.
fn stress(rotation: Rotation, restart: bool, follow_only_live: bool) {
    const TOTAL: usize = 30_000;
    const PER_FILE: usize = 2_500;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let checkpoints = dir.path().join("tail.json");
    let pattern = if follow_only_live {
        log.clone()
    } else {
        dir.path().join("app.log*")
    };
    let config = config(&[&pattern]);
    File::create(&log).expect("create");
    // One more than the highest line number read so far.
    let read_up_to = Arc::new(AtomicUsize::new(0));
    let mut tailer = Some(open_tailer(config.clone(), &checkpoints));
    if let Some(tailer) = tailer.as_mut() {
        assert!(tailer.poll(100).is_empty());
        tailer.commit().expect("commit");
    }

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = Arc::clone(&done);
        let read_up_to = Arc::clone(&read_up_to);
        let dir: PathBuf = dir.path().to_owned();
        std::thread::spawn(move || {
            let log = dir.join("app.log");
            let mut file = appender(&log);
            let mut n = 0;
            // The first line written to the current `app.log`.
            let mut first_in_file = 0;
            let write = |file: &mut File, n: &mut usize| {
                file.write_all(format!("line {n:06}\n").as_bytes())
                    .expect("write");
                *n += 1;
            };
            while n < TOTAL {
                write(&mut file, &mut n);
                if n % 50 == 0 {
                    // Bursts, so that reads and rotations interleave.
                    std::thread::sleep(Duration::from_micros(200));
                }
                if n % PER_FILE != 0 || n == TOTAL {
                    continue;
                }
                // Rotate only once the reader has read from the current file.
                let deadline = Instant::now() + DEADLINE;
                while read_up_to.load(Ordering::SeqCst) <= first_in_file
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let rotated = dir.join(format!("app.log.{}", n / PER_FILE));
                match rotation {
                    Rotation::Rename => {
                        std::fs::rename(&log, &rotated).expect("rename");
                        // Late lines to the old file, as before a writer reopens.
                        for _ in 0..10 {
                            write(&mut file, &mut n);
                        }
                        file = appender(&log);
                        first_in_file = n;
                    }
                    Rotation::CopyTruncate => {
                        // Nothing is written between the copy and the truncation.
                        std::fs::copy(&log, &rotated).expect("copy");
                        file.set_len(0).expect("truncate");
                        first_in_file = n;
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let expected: Vec<String> = strings(0..TOTAL);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    let mut restarted = !restart;
    let mut before_restart = TailStats::default();
    let mut quiet_polls_after_done = 0;
    while Instant::now() < deadline {
        let Some(current) = tailer.as_mut() else {
            break;
        };
        let lines = current.poll(1_000);
        current.commit().expect("commit");
        for line in &lines {
            if let Some(n) = line
                .text
                .strip_prefix("line ")
                .and_then(|n| n.parse::<usize>().ok())
            {
                read_up_to.fetch_max(n + 1, Ordering::SeqCst);
            }
            if !seen.insert(line.text.clone()) {
                duplicates.push(line.text.clone());
            }
        }
        if !restarted && seen.len() >= TOTAL / 2 {
            restarted = true;
            before_restart = current.stats();
            drop(tailer.take());
            tailer = Some(open_tailer(config.clone(), &checkpoints));
            continue;
        }
        if lines.is_empty() {
            if done.load(Ordering::SeqCst) && seen.len() >= TOTAL {
                quiet_polls_after_done += 1;
                if quiet_polls_after_done > 3 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    writer.join().expect("writer");
    let stats = tailer.as_ref().map(Tailer::stats);
    assert!(
        duplicates.is_empty(),
        "duplicates: {:?}",
        &duplicates[..duplicates.len().min(20)]
    );
    let mut got: Vec<String> = seen.into_iter().collect();
    got.sort();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| got.binary_search(l).is_err())
        .take(20)
        .collect();
    assert!(
        missing.is_empty(),
        "missing (first 20): {missing:?}; {stats:?}"
    );
    assert_eq!(got, expected);
    assert!(restarted);
    // The rotations happened while the tailer was following.
    let stats = stats.unwrap_or_default();
    let noticed = match rotation {
        Rotation::Rename => stats.rotations + before_restart.rotations,
        Rotation::CopyTruncate => stats.truncations + before_restart.truncations,
    };
    assert!(noticed > 0, "{before_restart:?} {stats:?}");
}

#[test]
fn stress_rename_rotation_with_a_restart_in_the_middle() {
    stress(Rotation::Rename, true, false);
}

#[test]
fn stress_rename_rotation_out_of_the_pattern_with_a_restart_in_the_middle() {
    stress(Rotation::Rename, true, true);
}

#[test]
fn stress_copytruncate_rotation() {
    stress(Rotation::CopyTruncate, false, false);
}

#[test]
fn stress_copytruncate_rotation_with_a_restart_in_the_middle() {
    stress(Rotation::CopyTruncate, true, false);
}
