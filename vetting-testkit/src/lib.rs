//! Test prerequisites, shared by every crate's tests (a dev-dependency only).
//!
//! A test that needs root, loop devices, network namespaces or a tool asks
//! [`prerequisite`] with what is missing (`None` when nothing is). Without
//! `VETTING_REQUIRE_ALL=1` a missing prerequisite skips the test visibly: it
//! prints `skipped: ...` and appends `TEST_NAME\tREASON` to the file named by
//! `VETTING_SKIP_LOG`, so `scripts/test.sh` can count skips that libtest
//! hides. With `VETTING_REQUIRE_ALL=1` (the test command sets it) the test
//! fails, naming what is missing.
#![allow(clippy::panic)]

use std::io::Write;
use std::path::Path;

/// The variable that turns a missing prerequisite into a failure.
pub const REQUIRE_ALL: &str = "VETTING_REQUIRE_ALL";
/// The variable naming the file skipped tests are appended to.
pub const SKIP_LOG: &str = "VETTING_SKIP_LOG";

/// Whether the test may go on: `true` when `missing` is `None`. Otherwise
/// panics under `VETTING_REQUIRE_ALL=1`, or records the skip and returns
/// `false` (the test then returns early).
pub fn prerequisite(missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    let test = test_name();
    if std::env::var(REQUIRE_ALL).is_ok_and(|value| value == "1") {
        panic!(
            "{test}: missing prerequisite: {reason} ({REQUIRE_ALL}=1 requires every test to run)"
        );
    }
    eprintln!("skipped: {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        let line = format!("{test}\t{}\n", reason.replace(['\t', '\n'], " "));
        // one write of one line with O_APPEND: parallel test processes do
        // not interleave within it
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = written {
            panic!(
                "cannot append to {SKIP_LOG} {}: {error}",
                Path::new(&log).display()
            );
        }
    }
    false
}

/// The running test, as `crate test::path` (libtest names each test's
/// thread after the test; cargo sets `CARGO_PKG_NAME` when it runs tests).
pub fn test_name() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed test");
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) => format!("{package} {test}"),
        Err(_) => test.to_string(),
    }
}

/// Every reason in `checks` that is missing, joined; `None` when none is.
pub fn all_of(checks: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    let missing: Vec<String> = checks.into_iter().flatten().collect();
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// Missing unless this process runs as root.
pub fn root() -> Option<String> {
    // /proc/self/status: "Uid:\treal\teffective\t..."
    let effective_uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_string))
        });
    (effective_uid.as_deref() != Some("0")).then(|| "root".to_string())
}

/// Missing unless loop devices can be made: root and `/dev/loop-control`.
pub fn loop_devices() -> Option<String> {
    all_of([root(), file("/dev/loop-control", "loop devices")])
}

/// Missing unless `path` exists; `what` says what it is for the reason.
pub fn file(path: &str, what: &str) -> Option<String> {
    (!Path::new(path).exists()).then(|| format!("{what} ({path} does not exist)"))
}

/// Missing unless `program` is on `PATH` or in an sbin folder.
pub fn program(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(Into::into))
        .any(|folder| folder.join(program).is_file());
    (!found).then(|| format!("{program} (scripts/install-deps.sh installs it)"))
}

/// Every row of every table of a SQLite database, table by table in name
/// order and row by row in rowid order, each row its columns quoted: what
/// a test compares before and after a refusal to show nothing changed.
/// `skip(table, column)` leaves a column out (bookkeeping a refused request
/// may still do). Panics on a database error: for tests only.
#[allow(clippy::unwrap_used, clippy::panic)]
pub async fn sqlite_rows(
    db: &sea_orm::DatabaseConnection,
    skip: impl Fn(&str, &str) -> bool,
) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = db.get_database_backend();
    let query = |sql: String| db.query_all_raw(Statement::from_string(backend, sql));
    let tables = query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name".into())
        .await
        .unwrap();
    let mut out = String::new();
    for table in tables {
        let name: String = table.try_get_by_index(0).unwrap();
        let columns: Vec<String> = query(format!("SELECT name FROM pragma_table_info('{name}')"))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).unwrap())
            .filter(|column| !skip(&name, column))
            .map(|column| format!("quote(\"{column}\")"))
            .collect();
        let rows = query(format!(
            "SELECT {} FROM \"{name}\" ORDER BY rowid",
            columns.join(" || '|' || ")
        ))
        .await
        .unwrap();
        out.push_str(&format!("== {name}\n"));
        for row in rows {
            out.push_str(&row.try_get_by_index::<String>(0).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_of_joins_what_is_missing() {
        assert_eq!(all_of([None, None]), None);
        assert_eq!(
            all_of([Some("root".into()), None, Some("fio".into())]),
            Some("root; fio".into())
        );
    }

    /// Only does something as the child of the test below.
    #[test]
    fn child_with_a_missing_prerequisite() {
        if std::env::var_os("VETTING_TESTKIT_CHILD").is_some() {
            assert!(!prerequisite(Some("a\tthing".into())));
        }
    }

    fn run_child(require_all: bool, log: &Path) -> std::process::Output {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args(["tests::child_with_a_missing_prerequisite", "--exact"])
            .env("VETTING_TESTKIT_CHILD", "1")
            .env(SKIP_LOG, log)
            .env_remove(REQUIRE_ALL);
        if require_all {
            command.env(REQUIRE_ALL, "1");
        }
        command.output().unwrap()
    }

    #[test]
    fn a_missing_prerequisite_is_logged_or_fails_when_all_are_required() {
        let log = std::env::temp_dir().join(format!("vetting-testkit-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);

        let skipped = run_child(false, &log);
        assert!(skipped.status.success(), "{skipped:?}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            logged,
            "vetting-testkit tests::child_with_a_missing_prerequisite\ta thing\n"
        );

        let required = run_child(true, &log);
        assert!(!required.status.success(), "{required:?}");
        let output = String::from_utf8_lossy(&required.stdout);
        assert!(
            output.contains("missing prerequisite: a\tthing (VETTING_REQUIRE_ALL=1"),
            "{output}"
        );
        // a failure is not also counted as a skip
        assert_eq!(std::fs::read_to_string(&log).unwrap(), logged);
        std::fs::remove_file(&log).unwrap();
    }

    #[test]
    fn a_missing_program_is_named() {
        assert_eq!(program("sh"), None);
        let missing = program("vetting-no-such-program").unwrap();
        assert!(missing.starts_with("vetting-no-such-program"), "{missing}");
    }
}
