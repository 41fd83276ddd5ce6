//! `vetting dispatch pause|resume|status`.

use serde_json::Value;

use crate::cli::DispatchCommand;
use crate::client::{Body, Method};
use crate::error::CliResult;
use crate::output::{print_fields, print_json, text, time};

use super::Context;

pub async fn run(context: &Context, command: DispatchCommand) -> CliResult<()> {
    let client = &context.client;
    let status = match command {
        DispatchCommand::Pause => {
            client
                .call_json(Method::POST, "/dispatch/pause", Body::Empty)
                .await?
        }
        DispatchCommand::Resume => {
            client
                .call_json(Method::POST, "/dispatch/resume", Body::Empty)
                .await?
        }
        DispatchCommand::Status => client.get_json("/dispatch").await?,
    };
    if context.json {
        print_json(&status);
        return Ok(());
    }
    let paused = status
        .get("paused")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    print_fields(&[
        (
            "dispatch",
            if paused {
                format!(
                    "paused by {} at {}",
                    text(&status, "paused_by"),
                    time(&status, "paused_at_ms")
                )
            } else {
                "running".into()
            },
        ),
        (
            "slots",
            format!(
                "{} of {} in use",
                text(&status, "slots_in_use"),
                text(&status, "slots_total")
            ),
        ),
        ("queued", text(&status, "queued")),
    ]);
    Ok(())
}
