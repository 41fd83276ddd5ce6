//! The command tree documents itself: `--help` of every subcommand works,
//! shell completions and the man page generate.

use std::process::Command;

use crate::whole_run::VETTING;

fn vetting(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(VETTING)
        .args(args)
        .env_remove("VETTING_SERVER")
        .env_remove("VETTING_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The subcommands a `--help` lists (its `Commands:` section).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_subcommand_has_working_help() {
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = Vec::new();
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, stdout, stderr) = vetting(&args);
        assert_eq!(code, 0, "vetting {}: {stderr}", args.join(" "));
        assert!(
            stdout.contains("Usage: vetting"),
            "vetting {}: {stdout}",
            args.join(" ")
        );
        for sub in subcommands(&stdout) {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
        seen.push(path.join(" "));
    }
    // the commands are all there
    for command in [
        "hosts add",
        "hosts list",
        "hosts show",
        "hosts edit",
        "hosts remove",
        "hosts import",
        "profiles add",
        "profiles list",
        "profiles show",
        "profiles check",
        "runs start",
        "runs list",
        "runs show",
        "runs watch",
        "runs logs",
        "runs cancel",
        "runs override-wipe",
        "runs release",
        "runs report",
        "runs retry-stage",
        "report",
        "tokens create",
        "tokens list",
        "tokens revoke",
        "dispatch pause",
        "dispatch resume",
        "dispatch status",
        "completions",
        "man",
        "serve",
        "demo",
        "config check",
        "db migrate",
    ] {
        assert!(
            seen.iter().any(|path| path == command),
            "no `vetting {command}`: {seen:?}"
        );
    }
}

#[test]
fn a_usage_error_exits_2() {
    let (code, _, stderr) = vetting(&["runs", "frobnicate"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = vetting(&["hosts", "add", "--name", "x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--mac"), "{stderr}");
}

#[test]
fn completions_and_the_man_page_generate() {
    for (shell, marker) in [
        ("bash", "_vetting()"),
        ("zsh", "#compdef vetting"),
        ("fish", "complete -c vetting"),
    ] {
        let (code, stdout, stderr) = vetting(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        assert!(
            stdout.contains("override-wipe"),
            "{shell} misses subcommands"
        );
    }
    let (code, page, stderr) = vetting(&["man"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains(".TH vetting"), "no title");
    assert!(
        page.contains("vetting\\-runs") || page.contains("vetting-runs"),
        "no subcommand pages"
    );
}

/// `vetting completions bash | head -c 10`: a reader that goes away ends
/// the CLI as SIGPIPE would (141), without a panic on stderr.
#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() {
    use std::io::Read;
    let mut child = Command::new(VETTING)
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}
