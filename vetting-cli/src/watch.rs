//! `vetting runs watch ID...`: follows runs until each has settled (ended
//! or held) and exits with their verdict (0 when every run completed, 1
//! otherwise).
//!
//! What is shown always comes from the API's reads (the run detail and its
//! log pages), so nothing is missed and local and remote look alike; what
//! differs is when they are read. Over a server the events stream
//! (`GET /api/v1/events?run=...`, SSE) says when something happened, and a
//! reconnect resumes after the last event id seen (`Last-Event-ID`); in
//! process the runs are read every second.
//!
//! On a terminal the screen is redrawn at each event and once a second:
//! per run its host, state, the stage list (each stage's outcome, the
//! current stage with its attempt, elapsed time and deadline) and the last
//! lines of the current stage's log. Elsewhere one line per event:
//! `<time> <run> <host> <from> -> <to>` and `<time> <run> <host> | <line>`
//! (`--json`: one JSON object per line, `{"type": "transition"|"log", ...}`).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use vetting_core::machine::RunState;

use crate::client::Client;
use crate::commands::Context;
use crate::commands::runs::{
    LogCursor, current_stage, format_log_line, has_settled, host_name, log_page, run_detail,
    run_of, state_of,
};
use crate::error::{CliResult, Exit, Failure};
use crate::output::{format_duration_ms, format_time, now_ms, text, visible};

/// The log lines of the current stage kept on screen.
const TAIL_LINES: usize = 10;
/// How long a watch waits out a server it cannot reach before it gives up.
pub const UNREACHABLE_GRACE: Duration = Duration::from_secs(120);
/// Over a server: how often the runs are read even without an event (the
/// events stream may lag behind a reconnect).
const REMOTE_REFRESH: Duration = Duration::from_secs(5);
/// The stages in run order, as the screen lists them.
const STAGES: [&str; 8] = [
    "InventoryCheck",
    "SpecValidate",
    "SMART",
    "CPUStress",
    "Storage",
    "Network",
    "GPU",
    "PSU",
];

/// One run being watched.
struct Watched {
    id: String,
    host: String,
    detail: Value,
    state: Option<RunState>,
    /// The highest transition id printed (one line per event).
    last_transition: i64,
    /// The log cursor of the one-line-per-event output (all stages).
    log_cursor: LogCursor,
    /// What the next read must fetch.
    needs_detail: bool,
    needs_log: bool,
    /// The stage the tail belongs to (`CPUStress#1`), its cursor and lines.
    tail_stage: String,
    tail_cursor: LogCursor,
    tail: VecDeque<String>,
}

impl Watched {
    fn settled(&self) -> bool {
        self.state.is_some_and(has_settled)
    }
}

/// The shortest time between two reads of the runs over a server: the
/// events of a burst (log lines arrive in many small batches) share one.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(500);

/// What the events stream's reader tells the watch.
enum Wake {
    /// Something happened to `run` (every run when not known): a
    /// transition (read the run's detail) or log lines (read its log).
    Event {
        run: Option<String>,
        transition: bool,
    },
    Failed(Failure),
}

impl Wake {
    fn everything() -> Wake {
        Wake::Event {
            run: None,
            transition: true,
        }
    }
}

pub async fn watch(context: &Context, ids: Vec<String>) -> CliResult<()> {
    let client = &context.client;
    let screen = !context.json && std::io::stdout().is_terminal();
    let mut ids_seen = Vec::new();
    let mut runs = Vec::new();
    for id in ids {
        if ids_seen.contains(&id) {
            continue;
        }
        let detail = run_detail(client, &id).await?;
        ids_seen.push(id.clone());
        runs.push(Watched {
            host: host_name(&detail),
            state: state_of(run_of(&detail)),
            id,
            detail,
            last_transition: 0,
            log_cursor: LogCursor::default(),
            needs_detail: false,
            needs_log: false,
            tail_stage: String::new(),
            tail_cursor: LogCursor::default(),
            tail: VecDeque::new(),
        });
    }
    for run in &mut runs {
        absorb(context, screen, run).await?;
    }
    let (wake_sender, mut wakes) = mpsc::channel::<Wake>(8);
    let mut events_open = false;
    if client.is_remote() {
        // resume the stream after the newest transition already printed
        let last = runs
            .iter()
            .map(|run| run.last_transition)
            .max()
            .unwrap_or(0);
        let client = client.clone();
        let ids = ids_seen.clone();
        tokio::spawn(follow_events(client, ids, last, wake_sender));
        events_open = true;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    if screen {
        draw(&runs, None);
    }
    while !runs.iter().all(Watched::settled) {
        let read = tokio::select! {
            wake = wakes.recv(), if events_open => match wake {
                Some(wake) => {
                    // the events of a burst share one read
                    if let Some(wait) = MIN_READ_INTERVAL.checked_sub(last_read.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                    mark(&mut runs, wake)?;
                    while let Ok(wake) = wakes.try_recv() {
                        mark(&mut runs, wake)?;
                    }
                    true
                }
                None => {
                    events_open = false;
                    mark(&mut runs, Wake::everything())?;
                    true
                }
            },
            _ = tick.tick() => {
                let due = !events_open || last_read.elapsed() >= REMOTE_REFRESH;
                if due {
                    mark(&mut runs, Wake::everything())?;
                }
                due
            }
        };
        let mut notice = None;
        if read {
            last_read = Instant::now();
            match read_marked(context, screen, &mut runs).await {
                Ok(()) => unreachable_since = None,
                Err(failure) if failure.exit == Exit::Unreachable => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNREACHABLE_GRACE {
                        return Err(failure);
                    }
                    if !screen {
                        eprintln!("warning: {} (retrying)", visible(&failure.message, true));
                    }
                    notice = Some(format!("{} (retrying)", visible(&failure.message, false)));
                }
                Err(failure) => return Err(failure),
            }
        }
        if screen {
            draw(&runs, notice.as_deref());
        }
    }
    if screen {
        draw(&runs, None);
    }
    verdict(context, &runs)
}

/// Marks what a wake says must be read again.
fn mark(runs: &mut [Watched], wake: Wake) -> CliResult<()> {
    let (run, transition) = match wake {
        Wake::Event { run, transition } => (run, transition),
        Wake::Failed(failure) => return Err(failure),
    };
    for watched in runs
        .iter_mut()
        .filter(|watched| run.as_ref().is_none_or(|run| *run == watched.id))
    {
        watched.needs_detail |= transition;
        watched.needs_log = true;
    }
    Ok(())
}

/// Reads what is marked of every run that has not settled.
async fn read_marked(context: &Context, screen: bool, runs: &mut [Watched]) -> CliResult<()> {
    for run in runs.iter_mut().filter(|run| !run.settled()) {
        if run.needs_detail {
            run.detail = run_detail(&context.client, &run.id).await?;
            run.state = state_of(run_of(&run.detail));
            run.needs_detail = false;
        }
        if run.needs_log {
            absorb(context, screen, run).await?;
            run.needs_log = false;
        }
    }
    Ok(())
}

/// Prints what is new in a run's detail and log (one line per event), or
/// brings its log tail up to date (the screen).
async fn absorb(context: &Context, screen: bool, run: &mut Watched) -> CliResult<()> {
    if screen {
        return read_tail(&context.client, run).await;
    }
    let mut transitions: Vec<Value> = run
        .detail
        .get("transitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    transitions.sort_by_key(|transition| transition.get("id").and_then(Value::as_i64));
    for transition in transitions {
        let id = transition.get("id").and_then(Value::as_i64).unwrap_or(0);
        if id <= run.last_transition {
            continue;
        }
        run.last_transition = id;
        if context.json {
            crate::outln!(
                "{}",
                json!({"type": "transition", "run": run.id, "host": run.host, "transition": transition})
            );
        } else {
            let at = transition
                .get("at_ms")
                .and_then(Value::as_i64)
                .map(format_time)
                .unwrap_or_default();
            crate::outln!(
                "{at} {} {} {} -> {}",
                run.id,
                run.host,
                text(&transition, "from"),
                text(&transition, "to")
            );
        }
    }
    loop {
        let (lines, next) = log_page(&context.client, &run.id, None, &run.log_cursor).await?;
        for line in &lines {
            if context.json {
                crate::outln!(
                    "{}",
                    json!({"type": "log", "run": run.id, "host": run.host, "line": line})
                );
            } else {
                crate::outln!("{} {} | {}", run.id, run.host, format_log_line(line));
            }
        }
        let moved = next != run.log_cursor;
        run.log_cursor = next;
        if lines.is_empty() || !moved {
            return Ok(());
        }
    }
}

/// The last lines of the current stage's log.
async fn read_tail(client: &Client, run: &mut Watched) -> CliResult<()> {
    let inner = run_of(&run.detail);
    let Some(current) = inner.get("current").filter(|current| current.is_object()) else {
        return Ok(());
    };
    let stage = text(current, "stage");
    let key = current_stage(inner);
    if key != run.tail_stage {
        run.tail_stage = key;
        run.tail_cursor = LogCursor::default();
        run.tail.clear();
    }
    loop {
        let (lines, next) = log_page(client, &run.id, Some(&stage), &run.tail_cursor).await?;
        for line in &lines {
            run.tail.push_back(format_log_line(line));
            if run.tail.len() > TAIL_LINES {
                run.tail.pop_front();
            }
        }
        let moved = next != run.tail_cursor;
        run.tail_cursor = next;
        if lines.is_empty() || !moved {
            return Ok(());
        }
    }
}

/// Redraws the whole screen (clear, home) with every run.
fn draw(runs: &[Watched], notice: Option<&str>) {
    let mut out = String::from("\x1b[H\x1b[2J");
    out.push_str(&format!(
        "vetting runs watch  {}  ({} run{})\n",
        format_time(now_ms()),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    ));
    if let Some(notice) = notice {
        out.push_str(&format!("! {notice}\n"));
    }
    for run in runs {
        out.push('\n');
        out.push_str(&screen_of(run));
    }
    crate::out!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// One run's block on the screen.
fn screen_of(run: &Watched) -> String {
    let inner = run_of(&run.detail);
    let now = now_ms();
    let mut out = format!(
        "run {}  host {}  {}",
        run.id,
        run.host,
        text(inner, "state")
    );
    if let Some(created) = inner.get("created_at_ms").and_then(Value::as_i64) {
        let end = inner
            .get("ended_at_ms")
            .and_then(Value::as_i64)
            .unwrap_or(now);
        out.push_str(&format!("  {}", format_duration_ms(end - created)));
    }
    out.push('\n');
    if let Some(reason) = inner.get("failure_reason").and_then(Value::as_str) {
        out.push_str(&format!(
            "  reason: {}\n",
            clip(&visible(reason, false), 110)
        ));
    }
    let stages: Vec<Value> = run
        .detail
        .get("stages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let current = inner.get("current").filter(|current| current.is_object());
    let current_name = current.map(|current| text(current, "stage"));
    let settled = run.settled();
    for name in STAGES {
        // the latest attempt of the stage
        let record = stages
            .iter()
            .filter(|stage| stage.get("stage").and_then(Value::as_str) == Some(name))
            .max_by_key(|stage| stage.get("attempt").and_then(Value::as_u64));
        let is_current = !settled && current_name.as_deref() == Some(name);
        let line = match (record, is_current) {
            (_, true) => {
                let attempt = current
                    .map(|current| text(current, "attempt"))
                    .unwrap_or_default();
                let started = record
                    .and_then(|stage| stage.get("started_at_ms"))
                    .and_then(Value::as_i64)
                    .or_else(|| inner.get("updated_at_ms").and_then(Value::as_i64))
                    .unwrap_or(now);
                let mut line = format!(
                    "  [>>]   {name:<15} running  attempt {attempt}  {}",
                    format_duration_ms(now - started)
                );
                if let Some(deadline) = inner.get("state_deadline_ms").and_then(Value::as_i64) {
                    line.push_str(&format!(
                        " of at most {}",
                        format_duration_ms(deadline - started)
                    ));
                }
                line
            }
            (Some(record), false) => {
                let outcome = text(record, "outcome");
                let took = match (
                    record.get("started_at_ms").and_then(Value::as_i64),
                    record.get("finished_at_ms").and_then(Value::as_i64),
                ) {
                    (Some(start), Some(end)) => format_duration_ms(end - start),
                    _ => String::new(),
                };
                let mut line = format!(
                    "  {:<6} {name:<15} {outcome:<8} attempt {}  {took}",
                    symbol(&outcome),
                    text(record, "attempt")
                );
                if let Some(reason) = record.get("reason").and_then(Value::as_str) {
                    line.push_str(&format!("  {}", clip(&visible(reason, false), 60)));
                }
                line
            }
            (None, false) => format!("  [  ]   {name}"),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !settled && !run.tail.is_empty() {
        out.push_str(&format!("  log of {}:\n", run.tail_stage));
        for line in &run.tail {
            out.push_str(&format!("    {}\n", clip(line, 110)));
        }
    }
    out
}

/// The outcome's mark on the stage list.
fn symbol(outcome: &str) -> &'static str {
    match outcome {
        "passed" => "[ok]",
        "warned" => "[warn]",
        "failed" => "[FAIL]",
        "skipped" => "[skip]",
        "held" => "[HELD]",
        _ => "[..]",
    }
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
        clipped.push('…');
        clipped
    }
}

/// The verdict per run, and the exit: 0 when every run completed.
fn verdict(context: &Context, runs: &[Watched]) -> CliResult<()> {
    let mut not_completed = Vec::new();
    for run in runs {
        let state = text(run_of(&run.detail), "state");
        if context.json {
            crate::outln!(
                "{}",
                json!({"type": "verdict", "run": run.id, "host": run.host, "state": state})
            );
        } else {
            crate::outln!("run {} ({}): {state}", run.id, run.host);
        }
        if run.state != Some(RunState::Completed) {
            not_completed.push(format!("{} ({state})", run.id));
        }
    }
    if not_completed.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            Exit::RunNotCompleted,
            format!(
                "{} of {} runs did not complete: {}",
                not_completed.len(),
                runs.len(),
                not_completed.join(", ")
            ),
        ))
    }
}

/// Reads the events stream of `ids` and wakes the watch at each event,
/// reconnecting (with `Last-Event-ID`) when the stream breaks.
async fn follow_events(client: Client, ids: Vec<String>, last: i64, wakes: mpsc::Sender<Wake>) {
    let mut last_event_id = Some(last.to_string());
    loop {
        match client.events(&ids, last_event_id.as_deref()).await {
            Ok(Some(mut response)) => {
                let mut buffer: Vec<u8> = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    buffer.extend(chunk.iter().filter(|byte| **byte != b'\r'));
                    while let Some(end) = find_blank_line(&buffer) {
                        let block: Vec<u8> = buffer.drain(..end + 2).collect();
                        let block = String::from_utf8_lossy(&block);
                        if let Some(wake) = parse_event(&block, &mut last_event_id) {
                            // when the queue is full, wakes are waiting
                            // already: the runs are read anyway
                            if wakes.try_send(wake).is_err() {
                                let _ = wakes.try_send(Wake::everything());
                            }
                        }
                    }
                }
                // the stream ended: read once (something may have happened
                // while reconnecting), then reconnect
                let _ = wakes.try_send(Wake::everything());
            }
            Ok(None) => return,
            Err(failure) if failure.exit == Exit::Unreachable => {}
            Err(failure) => {
                let _ = wakes.send(Wake::Failed(failure)).await;
                return;
            }
        }
        if wakes.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One event of the stream (the lines before a blank line): the wake it
/// stands for, `None` for a comment (keep-alive). Records its `id:`.
fn parse_event(block: &str, last_event_id: &mut Option<String>) -> Option<Wake> {
    let mut kind = "message";
    let mut data = String::new();
    for line in block.lines() {
        if let Some(id) = line.strip_prefix("id:") {
            *last_event_id = Some(id.trim().to_string());
        } else if let Some(name) = line.strip_prefix("event:") {
            kind = name.trim();
        } else if let Some(text) = line.strip_prefix("data:") {
            data.push_str(text.trim_start());
        }
    }
    if data.is_empty() {
        return None;
    }
    let run = serde_json::from_str::<Value>(&data).ok().and_then(|value| {
        value
            .get("run_id")
            .or_else(|| value.get("run"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    Some(Wake::Event {
        run,
        // anything but a log line may have moved the run
        transition: kind != "log",
    })
}

fn find_blank_line(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|window| window == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_the_stream() {
        let mut last = None;
        let transition =
            "event: transition\nid: 42\ndata: {\"id\":42,\"run_id\":\"r1\",\"from\":\"Booting\"}\n";
        match parse_event(transition, &mut last) {
            Some(Wake::Event { run, transition }) => {
                assert_eq!(run.as_deref(), Some("r1"));
                assert!(transition);
            }
            _ => panic!("not a wake"),
        }
        assert_eq!(last.as_deref(), Some("42"));
        let log = "event: log\ndata: {\"kind\":\"log\",\"run_id\":\"r2\",\"lines\":[\"x\"]}\n";
        match parse_event(log, &mut last) {
            Some(Wake::Event { run, transition }) => {
                assert_eq!(run.as_deref(), Some("r2"));
                assert!(!transition);
            }
            _ => panic!("not a wake"),
        }
        // a log event has no id: the resume point stays
        assert_eq!(last.as_deref(), Some("42"));
        assert!(parse_event(": keep-alive\n", &mut last).is_none());
        // data that is not JSON still wakes every run
        assert!(matches!(
            parse_event("data: ???\n", &mut last),
            Some(Wake::Event {
                run: None,
                transition: true
            })
        ));
    }
}
