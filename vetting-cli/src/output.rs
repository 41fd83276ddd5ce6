//! Output: `--json` prints the operator API's JSON as it came (its shapes
//! are documented in docs/operator-api.md and docs/openapi.json); tables
//! otherwise, columns as wide as their content, times in UTC
//! (`2026-12-03 18:40:00Z`) or as ages (`3m12s`), ids in full.

use serde_json::Value;

/// Prints `value` as pretty JSON (the `--json` output).
pub fn print_json(value: &Value) {
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// An aligned table.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table's text, each line ending in a newline, trailing spaces
    /// trimmed.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = row.get(index).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if index + 1 < columns {
                    let pad = width.saturating_sub(cell.chars().count()) + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        crate::out!("{}", self.render());
    }
}

/// Key/value lines (`runs show`, `hosts show`), keys aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in fields {
        crate::outln!("{key:width$}  {value}");
    }
}

/// `text` safe to print on a terminal: every control character (ANSI
/// escapes, carriage returns, newlines unless `keep_newlines`) is shown as
/// `\u{1b}` instead of acting. What the API returns may come from an
/// agent (a stage's reason, a host's serial from its inventory): it must
/// never drive the operator's terminal.
pub fn visible(text: &str, keep_newlines: bool) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !(keep_newlines && c == '\n') && c != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A string field, or `-`, safe to print ([`visible`]).
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(text)) => visible(text, false),
        Some(Value::Null) | None => "-".into(),
        Some(other) => visible(&other.to_string(), false),
    }
}

/// A list field of strings, comma-separated, or `-`.
pub fn list(value: &Value, key: &str) -> String {
    match value.get(key).and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(text) => visible(text, false),
                other => visible(&other.to_string(), false),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

/// A milliseconds-since-epoch field as a UTC time, or `-`.
pub fn time(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_i64)
        .map(format_time)
        .unwrap_or_else(|| "-".into())
}

/// `2026-12-03 18:40:00Z`.
pub fn format_time(at_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(at_ms) {
        Some(at) => at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => at_ms.to_string(),
    }
}

/// `18:40:00` (the one-line-per-event output of `runs watch`).
pub fn format_clock(at_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(at_ms) {
        Some(at) => at.format("%H:%M:%SZ").to_string(),
        None => at_ms.to_string(),
    }
}

/// An age or a duration: `45s`, `3m12s`, `2h05m`, `3d04h`.
pub fn format_duration_ms(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600)
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long ago `key` was, or `-`.
pub fn age(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_i64)
        .map(|at| format_duration_ms(now_ms() - at))
        .unwrap_or_else(|| "-".into())
}

/// The `next` cursor of a page, when there is one, as a hint on stderr
/// (stdout stays the table).
pub fn next_page_hint(page: &Value) {
    if let Some(next) = page.get("next").and_then(Value::as_str) {
        eprintln!("more: --before {next}");
    }
}

/// Writes to stdout: `print!` without its panic when the reader went
/// away (`vetting runs list | head`): the process ends as a program killed
/// by SIGPIPE would (exit 141), any other write error ends it with 5.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        let _ = writeln!(std::io::stderr(), "error: writing to stdout: {error}");
        std::process::exit(5);
    }
}

/// `print!` through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::output::write_stdout(format_args!($($arg)*));
        $crate::output::write_stdout(format_args!("\n"));
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_content() {
        let mut table = Table::new(&["NAME", "STATE"]);
        table.row(vec!["a-long-host-name".into(), "Queued".into()]);
        table.row(vec!["b".into(), "Completed".into()]);
        assert_eq!(
            table.render(),
            "NAME              STATE\na-long-host-name  Queued\nb                 Completed\n"
        );
    }

    #[test]
    fn what_the_api_returns_cannot_drive_the_terminal() {
        let reason = serde_json::json!({"reason": "ok\u{1b}[2J\u{1b}]0;owned\u{7}\r\nfake line"});
        assert_eq!(
            text(&reason, "reason"),
            "ok\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{d}\\u{a}fake line"
        );
        assert_eq!(visible("row 1\nrow 2\u{9b}", true), "row 1\nrow 2\\u{9b}");
        let macs = serde_json::json!({"macs": ["a\u{1b}b"]});
        assert_eq!(list(&macs, "macs"), "a\\u{1b}b");
    }

    #[test]
    fn times_and_ages() {
        assert_eq!(format_time(1_796_323_200_000), "2026-12-03 18:40:00Z");
        assert_eq!(format_duration_ms(192_000), "3m12s");
        assert_eq!(format_duration_ms(5_000), "5s");
        assert_eq!(format_duration_ms(7_500_000), "2h05m");
        assert_eq!(format_duration_ms(-1), "0s");
    }
}
