//! `vetting runs start|list|show|logs|cancel|override-wipe|release|report|
//! retry-stage` (and `vetting report`); `runs watch` is in `crate::watch`.

use std::time::Duration;

use serde_json::{Value, json};
use vetting_core::machine::RunState;

use crate::cli::{ReportArgs, RunsCommand};
use crate::client::{Body, Client, Method, encode};
use crate::error::{CliResult, Exit, Failure};
use crate::output::{
    Table, age, format_clock, format_duration_ms, list, next_page_hint, print_fields, print_json,
    text, time,
};

use super::{Context, items, query};

pub async fn run(context: &Context, command: RunsCommand) -> CliResult<()> {
    let client = &context.client;
    match command {
        RunsCommand::Start { hosts, all_idle } => start(context, hosts, all_idle).await,
        RunsCommand::List { state, host, page } => {
            let path = format!(
                "/runs{}",
                query(&[
                    ("state", state),
                    ("host", host),
                    ("limit", page.limit.map(|limit| limit.to_string())),
                    ("before", page.before),
                ])
            );
            let answer = client.get_json(&path).await?;
            if context.json {
                print_json(&answer);
            } else {
                let mut table = Table::new(&["ID", "HOST", "STATE", "STAGE", "CREATED", "UPDATED"]);
                for view in items(&answer) {
                    let run = run_of(&view);
                    table.row(vec![
                        text(run, "id"),
                        host_name(&view),
                        text(run, "state"),
                        current_stage(run),
                        time(run, "created_at_ms"),
                        age(run, "updated_at_ms"),
                    ]);
                }
                table.print();
                next_page_hint(&answer);
            }
            Ok(())
        }
        RunsCommand::Show { id } => {
            let detail = run_detail(client, &id).await?;
            if context.json {
                print_json(&detail);
            } else {
                show_detail(&detail);
            }
            Ok(())
        }
        RunsCommand::Watch { ids } => crate::watch::watch(context, ids).await,
        RunsCommand::Logs { id, stage, follow } => logs(context, &id, stage, follow).await,
        RunsCommand::Cancel { id } => act(context, &id, "cancel", Body::Json(json!({}))).await,
        RunsCommand::Release { id } => act(context, &id, "release", Body::Empty).await,
        RunsCommand::OverrideWipe { id, acknowledge } => {
            act(
                context,
                &id,
                "override-wipe",
                Body::Json(json!({ "acknowledge": acknowledge })),
            )
            .await
        }
        RunsCommand::RetryStage { id, stage } => {
            act(
                context,
                &id,
                "retry-stage",
                Body::Json(json!({ "stage": stage })),
            )
            .await
        }
        RunsCommand::Report(args) => report(context, args).await,
    }
}

/// The `Run` of a `RunView` or `RunDetail` (`{"run": ..., ...}`), or the
/// value itself when it is a run.
pub fn run_of(value: &Value) -> &Value {
    match value.get("run") {
        Some(run) if run.is_object() => run,
        _ => value,
    }
}

/// The host name of a `RunView` or `RunDetail`.
pub fn host_name(value: &Value) -> String {
    if let Some(name) = value.get("host_name").and_then(Value::as_str) {
        return crate::output::visible(name, false);
    }
    match value.get("host") {
        Some(host) if host.is_object() => text(host, "name"),
        Some(Value::String(name)) => crate::output::visible(name, false),
        _ => text(run_of(value), "host_id"),
    }
}

/// `CPUStress#1`, or `-`.
pub fn current_stage(run: &Value) -> String {
    match run.get("current") {
        Some(current) if current.is_object() => {
            format!("{}#{}", text(current, "stage"), text(current, "attempt"))
        }
        _ => "-".into(),
    }
}

/// The run's state, parsed.
pub fn state_of(run: &Value) -> Option<RunState> {
    serde_json::from_value(run.get("state")?.clone()).ok()
}

/// Whether a run's state is one it stays in without an operator: an end,
/// or a hold.
pub fn has_settled(state: RunState) -> bool {
    state.is_terminal() || state == RunState::FailedHolding
}

pub async fn run_detail(client: &Client, id: &str) -> CliResult<Value> {
    client.get_json(&format!("/runs/{}", encode(id))).await
}

async fn start(context: &Context, hosts: Vec<String>, all_idle: bool) -> CliResult<()> {
    let answer = context
        .client
        .call_json(
            Method::POST,
            "/runs",
            Body::Json(json!({ "hosts": hosts, "all_idle": all_idle })),
        )
        .await?;
    let started = answer
        .get("started")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if context.json {
        print_json(&answer);
    }
    let mut worst: Option<Exit> = None;
    let mut refused = Vec::new();
    for entry in &started {
        let host = text(entry, "host");
        match entry.get("run") {
            Some(run) if !run.is_null() => {
                if !context.json {
                    let id = match run {
                        Value::String(id) => crate::output::visible(id, false),
                        other => text(other, "id"),
                    };
                    crate::outln!("{id}");
                }
            }
            _ => {
                let (message, exit) = match entry.get("error") {
                    Some(Value::String(message)) => {
                        (crate::output::visible(message, true), status_exit(entry))
                    }
                    Some(error) if error.is_object() => (
                        text(error, "error"),
                        status_exit(error).or_else(|| status_exit(entry)),
                    ),
                    _ => ("refused".to_string(), None),
                };
                // a refusal whose kind the API does not say is a refusal
                let exit = exit.unwrap_or(Exit::Refused);
                eprintln!("error: host {host}: {message}");
                refused.push(host);
                worst = Some(match worst {
                    Some(previous) if previous.code() >= exit.code() => previous,
                    _ => exit,
                });
            }
        }
    }
    match worst {
        None => Ok(()),
        Some(exit) => Err(Failure::new(
            exit,
            format!(
                "{} of {} hosts refused: {}",
                refused.len(),
                started.len(),
                refused.join(", ")
            ),
        )),
    }
}

/// The exit code of an entry's `status` (an HTTP status), when it has one.
fn status_exit(value: &Value) -> Option<Exit> {
    value
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|status| u16::try_from(status).ok())
        .map(Exit::of_status)
}

/// An operator action on a run; prints what it did.
async fn act(context: &Context, id: &str, action: &str, body: Body) -> CliResult<()> {
    let applied = context
        .client
        .call_json(
            Method::POST,
            &format!("/runs/{}/{action}", encode(id)),
            body,
        )
        .await?;
    if context.json {
        print_json(&applied);
    } else {
        let from = text(&applied, "from");
        let state = match text(&applied, "state") {
            state if state != "-" => state,
            _ => text(&applied, "to"),
        };
        crate::outln!("run {id}: {action}: {from} -> {state}");
    }
    Ok(())
}

pub async fn report(context: &Context, args: ReportArgs) -> CliResult<()> {
    let answer = context
        .client
        .call(
            Method::GET,
            &format!(
                "/runs/{}/report?format={}",
                encode(&args.id),
                args.format.as_str()
            ),
            Body::Empty,
        )
        .await?;
    match &args.output {
        Some(file) => {
            std::fs::write(file, &answer.body).map_err(|error| {
                Failure::input(format!("cannot write {}: {error}", file.display()))
            })?;
            eprintln!("wrote {}", file.display());
        }
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout();
            stdout
                .write_all(&answer.body)
                .and_then(|()| {
                    if answer.body.last() != Some(&b'\n') {
                        stdout.write_all(b"\n")
                    } else {
                        Ok(())
                    }
                })
                .map_err(|error| Failure::internal(format!("stdout: {error}")))?;
        }
    }
    Ok(())
}

fn show_detail(detail: &Value) {
    let run = run_of(detail);
    let mut fields = vec![
        ("run", text(run, "id")),
        ("host", host_name(detail)),
        ("state", text(run, "state")),
        ("stage", current_stage(run)),
        ("hold reason", text(run, "hold_reason")),
        ("failure", text(run, "failure_reason")),
        ("created", time(run, "created_at_ms")),
        ("created by", text(run, "created_by")),
        ("updated", time(run, "updated_at_ms")),
        ("ended", time(run, "ended_at_ms")),
    ];
    if run
        .get("acknowledged_findings")
        .and_then(Value::as_array)
        .is_some_and(|items| !items.is_empty())
    {
        fields.push(("acknowledged", list(run, "acknowledged_findings")));
    }
    print_fields(&fields);
    let stages = array(detail, "stages");
    if !stages.is_empty() {
        crate::outln!();
        let mut table = Table::new(&["STAGE", "ATTEMPT", "OUTCOME", "STARTED", "TOOK", "REASON"]);
        for stage in &stages {
            let took = match (
                stage.get("started_at_ms").and_then(Value::as_i64),
                stage.get("finished_at_ms").and_then(Value::as_i64),
            ) {
                (Some(start), Some(end)) => format_duration_ms(end - start),
                (Some(start), None) => {
                    format!(
                        "{} so far",
                        format_duration_ms(crate::output::now_ms() - start)
                    )
                }
                _ => "-".into(),
            };
            table.row(vec![
                text(stage, "stage"),
                text(stage, "attempt"),
                text(stage, "outcome"),
                time(stage, "started_at_ms"),
                took,
                text(stage, "reason"),
            ]);
        }
        table.print();
    }
    let findings = array(detail, "held_findings");
    if !findings.is_empty() {
        crate::outln!();
        crate::outln!(
            "held findings (acknowledge with `runs override-wipe {} --acknowledge ID...`):",
            text(run, "id")
        );
        let mut table = Table::new(&["ID", "DISK", "KIND", "DETAIL"]);
        for finding in &findings {
            table.row(vec![
                text(finding, "id"),
                text(finding, "disk"),
                text(finding, "kind"),
                text(finding, "detail"),
            ]);
        }
        table.print();
    }
    let transitions = array(detail, "transitions");
    if !transitions.is_empty() {
        crate::outln!();
        let mut table = Table::new(&["AT", "FROM", "TO", "EVENT", "BY"]);
        for transition in &transitions {
            table.row(vec![
                time(transition, "at_ms"),
                text(transition, "from"),
                text(transition, "to"),
                text(transition, "event"),
                text(transition, "actor"),
            ]);
        }
        table.print();
    }
}

fn array(value: &Value, key: &str) -> Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Where a reading of a run's log is: past the agent's lines and past
/// the orchestrator's own (power actions, boot scripts). Opaque: the
/// API's `next` and `orchestrator_next`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCursor {
    agent: Option<String>,
    orchestrator: Option<String>,
}

fn cursor_text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(next)) => Some(next.clone()),
        Some(Value::Number(next)) => Some(next.to_string()),
        _ => None,
    }
}

/// The log lines after `cursor` (the agent's, then the orchestrator's
/// own, which carry `"stream": "orchestrator"`), and the cursor past them.
pub async fn log_page(
    client: &Client,
    id: &str,
    stage: Option<&str>,
    cursor: &LogCursor,
) -> CliResult<(Vec<Value>, LogCursor)> {
    let path = format!(
        "/runs/{}/logs{}",
        encode(id),
        query(&[
            ("stage", stage.map(str::to_string)),
            ("after", cursor.agent.clone()),
            ("orchestrator_after", cursor.orchestrator.clone()),
        ])
    );
    let answer = client.get_json(&path).await?;
    let mut lines = array(&answer, "lines");
    for line in array(&answer, "orchestrator") {
        lines.push(json!({
            "at_ms": line.get("at_ms"),
            "stream": "orchestrator",
            "text": format!("{}: {}", text(&line, "level"), text(&line, "text")),
        }));
    }
    let next = LogCursor {
        agent: cursor_text(answer.get("next")).or_else(|| cursor.agent.clone()),
        orchestrator: cursor_text(answer.get("orchestrator_next"))
            .or_else(|| cursor.orchestrator.clone()),
    };
    Ok((lines, next))
}

/// A log line as `runs logs` prints it: `18:40:00Z [stage] text`.
pub fn format_log_line(line: &Value) -> String {
    let at = line
        .get("at_ms")
        .and_then(Value::as_i64)
        .map(format_clock)
        .unwrap_or_default();
    let stage = match line.get("stage") {
        Some(Value::String(stage)) => format!(" [{}]", crate::output::visible(stage, false)),
        Some(stage) if stage.is_object() => format!(" [{}]", text(stage, "stage")),
        _ => String::new(),
    };
    let stream = match line.get("stream").and_then(Value::as_str) {
        Some("stderr") => " (stderr)",
        Some("orchestrator") => " (orchestrator)",
        _ => "",
    };
    format!("{at}{stage}{stream} {}", text(line, "text"))
}

async fn logs(context: &Context, id: &str, stage: Option<String>, follow: bool) -> CliResult<()> {
    let mut cursor = LogCursor::default();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        match print_new_lines(context, id, stage.as_deref(), follow, &mut cursor).await {
            Ok(true) => return Ok(()),
            Ok(false) => unreachable_since = None,
            // following, a server restart is waited out (as `runs watch`
            // does)
            Err(failure) if follow && failure.exit == Exit::Unreachable => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > crate::watch::UNREACHABLE_GRACE {
                    return Err(failure);
                }
                eprintln!(
                    "warning: {} (retrying)",
                    crate::output::visible(&failure.message, true)
                );
            }
            Err(failure) => return Err(failure),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints the lines after `cursor`; whether the run had settled before
/// they were read (then they are all it will ever have).
async fn print_new_lines(
    context: &Context,
    id: &str,
    stage: Option<&str>,
    follow: bool,
    cursor: &mut LogCursor,
) -> CliResult<bool> {
    let client = &context.client;
    let settled = if follow {
        let detail = run_detail(client, id).await?;
        state_of(run_of(&detail)).is_some_and(has_settled)
    } else {
        true
    };
    loop {
        let (lines, next) = log_page(client, id, stage, cursor).await?;
        for line in &lines {
            if context.json {
                crate::outln!("{line}");
            } else {
                crate::outln!("{}", format_log_line(line));
            }
        }
        let moved = next != *cursor;
        *cursor = next;
        if lines.is_empty() || !moved {
            return Ok(settled);
        }
    }
}
