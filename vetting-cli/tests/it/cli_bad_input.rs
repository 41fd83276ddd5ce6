//! Bad input changes nothing and says what was wrong: each refused
//! command prints `error: ...` naming the problem on stderr, exits with
//! the documented code (2 input, 3 unreachable, 4 refused), and leaves
//! the database fingerprint as it was. Against a server with `--server`
//! and API tokens, and in-process on the local database.

use crate::cli_support::{Outcome, Target, fingerprint, vetting, wait_for_discovery};
use crate::whole_run::{Env, env, free_port};

/// One refused command: its arguments, the exit code, and what stderr
/// must name.
struct Case {
    what: &'static str,
    args: Vec<String>,
    code: i32,
    names: Vec<String>,
}

fn case(what: &'static str, args: &[&str], code: i32, names: &[&str]) -> Case {
    Case {
        what,
        args: args.iter().map(|arg| arg.to_string()).collect(),
        code,
        names: names.iter().map(|name| name.to_string()).collect(),
    }
}

/// The refusals every target must give.
fn common_cases(run_id: &str) -> Vec<Case> {
    vec![
        case(
            "an unknown host",
            &["hosts", "show", "no-such-host"],
            2,
            &["no-such-host"],
        ),
        case(
            "a run on an unknown host",
            &["runs", "start", "no-such-host"],
            2,
            &["no-such-host"],
        ),
        case(
            "a malformed MAC",
            &[
                "hosts",
                "add",
                "--name",
                "new-1",
                "--mac",
                "02:00:zz:00:00:01",
            ],
            2,
            &["02:00:zz:00:00:01"],
        ),
        case(
            "a duplicate MAC",
            &[
                "hosts",
                "add",
                "--name",
                "new-2",
                "--mac",
                "02-00-00-00-AA-01",
            ],
            4,
            &["02:00:00:00:aa:01", "known-1"],
        ),
        case(
            "a CSV with one bad row among good ones",
            &["hosts", "import", "mixed.csv"],
            2,
            &["mixed.csv", "line 3", "02:00:00:00:bb:zz"],
        ),
        case(
            "a spec with a wrong type",
            &["profiles", "add", "typed", "wrong-type.yaml"],
            2,
            &["wrong-type.yaml", "cores", "line 3"],
        ),
        case(
            "a spec with a wrong type, checked offline",
            &["profiles", "check", "wrong-type.yaml"],
            2,
            &["wrong-type.yaml", "cores", "line 3"],
        ),
        case(
            "an override on a run that is not held",
            &[
                "runs",
                "override-wipe",
                run_id,
                "--acknowledge",
                "serial:X/gpt@0x200",
            ],
            4,
            &[run_id],
        ),
        case(
            "an unknown run",
            &["runs", "show", "no-such-run"],
            2,
            &["no-such-run"],
        ),
        case(
            "a retry of a stage on a run that is not held",
            &["runs", "retry-stage", run_id, "Storage"],
            4,
            &[run_id],
        ),
        case("a usage error", &["runs", "start"], 2, &["<HOST>"]),
        case(
            "an unknown state",
            &["runs", "list", "--state", "Sleeping"],
            2,
            &["Sleeping"],
        ),
    ]
}

async fn check(env: &Env, target: &Target, cases: &[Case], label: &str) {
    let dir = env.dir.path();
    let config = &env.server.config_file;
    let before = fingerprint(&env.orchestrator).await;
    for case in cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let outcome: Outcome = vetting(dir, config, target, &args);
        let what = format!("{label}: {}", case.what);
        let outcome = outcome.expect_code(case.code, &what);
        assert!(
            outcome.stderr.starts_with("error: "),
            "{what}: stderr is not `error: ...`:\n{}",
            outcome.stderr
        );
        for name in &case.names {
            assert!(
                outcome.stderr.contains(name.as_str()),
                "{what}: stderr does not name `{name}`:\n{}",
                outcome.stderr
            );
        }
        let after = fingerprint(&env.orchestrator).await;
        assert!(
            after == before,
            "{what} changed the database:\nbefore:\n{before}\nafter:\n{after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_changes_nothing_and_says_what_was_wrong() {
    let mut env = env("").await;
    let dir = env.dir.path().to_path_buf();
    let config = env.server.config_file.clone();
    wait_for_discovery(&dir.join("data"), env.server.child.as_ref().unwrap().id());
    std::fs::write(dir.join("good.yaml"), "schema_version: 1\n").unwrap();
    std::fs::write(
        dir.join("wrong-type.yaml"),
        "schema_version: 1\ncpu:\n  cores: many\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mixed.csv"),
        "name,macs,serial,profile,power\n\
         fresh-1,02:00:00:00:bb:01,,good,\n\
         fresh-2,02:00:00:00:bb:zz,,good,\n\
         fresh-3,02:00:00:00:bb:03,,good,\n",
    )
    .unwrap();
    // the state the refusals must leave alone, made through the server the
    // CLI discovers: a host, a run that is not held (queued: the dispatcher
    // is paused), tokens
    let local = Target::Local;
    let run = |args: &[&str]| vetting(&dir, &config, &local, args).expect_code(0, &args.join(" "));
    run(&["profiles", "add", "good", "good.yaml"]);
    run(&[
        "hosts",
        "add",
        "--name",
        "known-1",
        "--mac",
        "02:00:00:00:aa:01",
        "--profile",
        "good",
    ]);
    run(&["dispatch", "pause"]);
    let run_id = run(&["runs", "start", "known-1"]).stdout.trim().to_string();
    let admin = run(&["tokens", "create", "admin-t", "--role", "admin"])
        .stdout
        .trim()
        .to_string();
    let viewer = run(&["tokens", "create", "viewer-t", "--role", "viewer"])
        .stdout
        .trim()
        .to_string();
    let gone = run(&["tokens", "create", "gone-t", "--role", "admin"])
        .stdout
        .trim()
        .to_string();
    run(&["tokens", "revoke", "gone-t"]);
    let shown = run(&["--json", "runs", "show", &run_id]).stdout;
    assert!(shown.contains("\"Queued\""), "{shown}");

    let url = env.server.url();
    let server = |token: Option<&str>| Target::Server {
        url: url.clone(),
        token: token.map(str::to_string),
    };
    // the token works: what is refused below is refused for its reason
    vetting(&dir, &config, &server(Some(&admin)), &["hosts", "list"]).expect_code(0, "admin token");
    check(
        &env,
        &server(Some(&admin)),
        &common_cases(&run_id),
        "--server",
    )
    .await;
    // the admin token with its last character changed
    let last = if admin.ends_with('x') { "y" } else { "x" };
    let wrong = format!("{}{last}", &admin[..admin.len() - 1]);
    check(
        &env,
        &server(Some(&viewer)),
        &[
            case(
                "a viewer starting a run",
                &["runs", "start", "known-1"],
                4,
                &["operator"],
            ),
            case(
                "a viewer adding a host",
                &[
                    "hosts",
                    "add",
                    "--name",
                    "new-3",
                    "--mac",
                    "02:00:00:00:cc:01",
                ],
                4,
                &["admin"],
            ),
        ],
        "viewer token",
    )
    .await;
    for (label, token) in [
        ("no token", None),
        ("a wrong token", Some(wrong.as_str())),
        ("a revoked token", Some(gone.as_str())),
        ("not a token", Some("hello")),
    ] {
        check(
            &env,
            &server(token),
            &[
                case("listing hosts", &["hosts", "list"], 4, &[]),
                case("starting a run", &["runs", "start", "known-1"], 4, &[]),
            ],
            label,
        )
        .await;
    }
    let nobody = format!("http://127.0.0.1:{}", free_port());
    check(
        &env,
        &Target::Server {
            url: nobody.clone(),
            token: Some(admin.clone()),
        },
        &[case(
            "a server that is not there",
            &["hosts", "list"],
            3,
            &[&nobody],
        )],
        "unreachable",
    )
    .await;

    // in-process on the local database: no server holds it now
    env.server.kill();
    check(&env, &local, &common_cases(&run_id), "local").await;

    // the fingerprint is not blind: the good rows of the CSV, imported
    // alone, change it
    let before = fingerprint(&env.orchestrator).await;
    let good: String = std::fs::read_to_string(dir.join("mixed.csv"))
        .unwrap()
        .lines()
        .filter(|line| !line.contains("bb:zz"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(dir.join("good.csv"), good).unwrap();
    run(&["hosts", "import", "good.csv"]);
    assert_ne!(fingerprint(&env.orchestrator).await, before);

    // a run that did not complete: `runs watch` says so and exits 1
    let cancelled = run(&["runs", "cancel", &run_id]);
    assert!(cancelled.stdout.contains("Cancelled"), "{cancelled:?}");
    let watched = vetting(&dir, &config, &local, &["runs", "watch", &run_id])
        .expect_code(1, "runs watch of a cancelled run");
    assert!(
        watched
            .stdout
            .contains(&format!("{run_id} known-1 Queued -> Cancelled")),
        "{watched:?}"
    );
    assert!(
        watched
            .stdout
            .contains(&format!("run {run_id} (known-1): Cancelled")),
        "{watched:?}"
    );
    assert!(watched.stderr.contains("did not complete"), "{watched:?}");
}
