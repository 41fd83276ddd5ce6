//! Run logs: a flat file per run, stage and attempt under
//! `{data}/runs/{run}/logs/`, one line per agent log line:
//! `{seq}\t{at_ms}\t{stream}\t{text}` (newlines in the text escaped).
//!
//! Exactly once, even across a SIGKILL: the database holds the next
//! expected sequence number of the run and, per file, the length that is
//! committed. A batch first truncates each file back to its committed
//! length (undoing an append whose commit never happened), appends, syncs,
//! then commits the new lengths and the new sequence number together.

use std::io::Write;
use std::path::{Path, PathBuf};

use vetting_probes::protocol::{LogLine, LogStream};

pub(crate) mod group;
pub mod oplog;

/// The log file name for a line.
pub fn file_for(line: &LogLine) -> String {
    match line.stage {
        Some(stage) => format!("{}-{}.log", stage.stage.as_str(), stage.attempt),
        None => "agent.log".to_string(),
    }
}

/// The folder of a run's logs.
pub fn run_log_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join("runs").join(run_id).join("logs")
}

/// One line as written to the file.
pub fn format_line(line: &LogLine) -> String {
    let stream = match line.stream {
        LogStream::Agent => "agent",
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    format!(
        "{}\t{}\t{stream}\t{}\n",
        line.seq,
        line.at_ms,
        escape(&line.text)
    )
}

/// A text as one line of a file: `\`, newline and carriage return
/// escaped as `\\`, `\n` and `\r`; every other control character but tab
/// (ANSI escapes, NUL, C1 controls) becomes visible as `\u{1b}`, which
/// [`unescape`] leaves as it is: what an agent logs can never drive the
/// terminal or page that shows it.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c if c.is_control() && c != '\t' => {
                escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => escaped.push(c),
        }
    }
    escaped
}

/// A text as it is shown live (the events hub): control characters but
/// newline and tab made visible as [`escape`] writes them.
pub fn visible(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_string();
    }
    unescape(&escape(text))
}

/// The text [`escape`] was given, read in one pass (so that an escaped
/// backslash followed by `n` stays a backslash and an `n`).
pub fn unescape(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            plain.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => plain.push('\n'),
            Some('r') => plain.push('\r'),
            Some('\\') => plain.push('\\'),
            Some(other) => {
                plain.push('\\');
                plain.push(other);
            }
            None => plain.push('\\'),
        }
    }
    plain
}

/// A line read back from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub seq: u64,
    pub at_ms: i64,
    pub stream: String,
    pub text: String,
}

/// Parses a log file's lines (skipping any that do not parse).
pub fn parse_lines(text: &str) -> Vec<StoredLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, '\t');
            let seq = parts.next()?.parse().ok()?;
            let at_ms = parts.next()?.parse().ok()?;
            let stream = parts.next()?.to_string();
            let text = unescape(parts.next().unwrap_or(""));
            Some(StoredLine {
                seq,
                at_ms,
                stream,
                text,
            })
        })
        .collect()
}

/// Truncates `path` to `committed_len` and appends `text`, then syncs.
/// Returns the new length. The folder is made when the file is new; the
/// file is only truncated when something past `committed_len` is there
/// (an append whose commit never happened): a truncation to the same
/// length still costs the file system a journal entry.
pub fn append_committed(path: &Path, committed_len: u64, text: &str) -> std::io::Result<u64> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
    };
    let mut file = match open() {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            open()?
        }
        Err(error) => return Err(error),
    };
    if file.metadata()?.len() != committed_len {
        file.set_len(committed_len)?;
    }
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(committed_len))?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    Ok(committed_len + text.len() as u64)
}

/// One append of [`append_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub path: PathBuf,
    pub committed_len: u64,
    pub text: String,
}

/// How many files [`append_all`] syncs at once: concurrent syncs share
/// the file system's journal commits.
const SYNC_THREADS: usize = 16;

/// [`append_committed`] for many files (each at most once), the syncs
/// running side by side on the runtime's blocking threads (kept between
/// calls, not started for each). Returns the new lengths in order.
pub async fn append_all(appends: Vec<Append>) -> std::io::Result<Vec<u64>> {
    let per_thread = appends.len().div_ceil(SYNC_THREADS).max(1);
    let mut workers = Vec::with_capacity(SYNC_THREADS);
    let mut appends = appends.into_iter();
    loop {
        let chunk: Vec<Append> = appends.by_ref().take(per_thread).collect();
        if chunk.is_empty() {
            break;
        }
        workers.push(tokio::task::spawn_blocking(move || {
            chunk
                .iter()
                .map(|append| append_committed(&append.path, append.committed_len, &append.text))
                .collect::<std::io::Result<Vec<u64>>>()
        }));
    }
    let mut lengths = Vec::new();
    for worker in workers {
        let chunk = worker
            .await
            .map_err(|_| std::io::Error::other("a log append task panicked"))??;
        lengths.extend(chunk);
    }
    Ok(lengths)
}

/// Every stored line of a run, from all its files, in sequence order.
pub fn read_run(data_dir: &Path, run_id: &str) -> std::io::Result<Vec<StoredLine>> {
    let dir = run_log_dir(data_dir, run_id);
    let mut lines = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(lines),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let text = std::fs::read_to_string(entry.path())?;
        lines.extend(parse_lines(&text));
    }
    lines.sort_by_key(|line| line.seq);
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vetting_probes::protocol::{Stage, StageRef};

    #[test]
    fn lines_round_trip_with_escapes() {
        let line = LogLine {
            seq: 7,
            at_ms: 1234,
            stage: Some(StageRef {
                stage: Stage::Storage,
                attempt: 2,
            }),
            stream: LogStream::Stderr,
            text: "two\nlines \\ and\ttab, C:\\new\\root \\\\n\r".into(),
        };
        assert_eq!(file_for(&line), "Storage-2.log");
        let parsed = parse_lines(&format_line(&line));
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].seq, 7);
        assert_eq!(parsed[0].text, line.text);
    }

    #[test]
    fn an_uncommitted_append_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let committed = append_committed(&path, 0, "a\n").unwrap();
        // an append whose commit never happened
        append_committed(&path, committed, "lost\n").unwrap();
        let again = append_committed(&path, committed, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        assert_eq!(again, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_files_are_appended_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let appends: Vec<Append> = (0..40)
            .map(|i| Append {
                path: dir.path().join(format!("run-{i}")).join("x.log"),
                committed_len: 0,
                text: format!("line {i}\n"),
            })
            .collect();
        let lengths = append_all(appends.clone()).await.unwrap();
        assert_eq!(lengths.len(), 40);
        for (i, append) in appends.iter().enumerate() {
            assert_eq!(lengths[i], append.text.len() as u64);
            assert_eq!(std::fs::read_to_string(&append.path).unwrap(), append.text);
        }
    }
    #[test]
    fn control_characters_are_stored_and_shown_visible() {
        let text = "\u{1b}[31mred\u{1b}[0m nul\0 c1\u{9b}2J tab\tend";
        let stored = escape(text);
        assert!(
            !stored.chars().any(|c| c.is_control() && c != '\t'),
            "{stored:?}"
        );
        let read = unescape(&stored);
        assert_eq!(
            read,
            "\\u{1b}[31mred\\u{1b}[0m nul\\u{0} c1\\u{9b}2J tab\tend"
        );
        assert_eq!(visible(text), read);
        assert_eq!(visible("plain\nline"), "plain\nline");
    }
}
