//! `vetting profiles add|list|show|check`.

use serde_json::json;

use crate::cli::ProfilesCommand;
use crate::client::{Body, Method, encode};
use crate::error::{CliResult, Failure};
use crate::output::{Table, print_json, text, time};

use super::{Context, items, read_input};

pub async fn run(context: &Context, command: ProfilesCommand) -> CliResult<()> {
    let client = &context.client;
    match command {
        ProfilesCommand::Add { name, file } => {
            let yaml = read_input(&file)?;
            let profile = client
                .call_json(
                    Method::PUT,
                    &format!("/profiles/{}", encode(&name)),
                    Body::Text("application/yaml", yaml),
                )
                .await
                .map_err(|failure| {
                    Failure::new(
                        failure.exit,
                        format!("{}: {}", file.display(), failure.message),
                    )
                })?;
            if context.json {
                print_json(&profile);
            } else {
                crate::outln!("stored profile {name}");
            }
        }
        ProfilesCommand::List => {
            let profiles = client.get_json("/profiles").await?;
            if context.json {
                print_json(&profiles);
            } else {
                let mut table = Table::new(&["NAME", "UPDATED"]);
                for profile in items(&profiles) {
                    table.row(vec![
                        text(&profile, "name"),
                        time(&profile, "updated_at_ms"),
                    ]);
                }
                table.print();
            }
        }
        ProfilesCommand::Show { name } => {
            let profile = client
                .get_json(&format!("/profiles/{}", encode(&name)))
                .await?;
            if context.json {
                print_json(&profile);
            } else {
                // the text as written, newlines kept, controls shown
                let body = crate::output::visible(
                    profile
                        .get("text")
                        .and_then(|text| text.as_str())
                        .unwrap_or(""),
                    true,
                );
                crate::out!("{body}");
                if !body.ends_with('\n') {
                    crate::outln!();
                }
            }
        }
        ProfilesCommand::Check { file } => check(context.json, &file)?,
    }
    Ok(())
}

/// `profiles check FILE`: parses and validates the spec locally with
/// `vetting_core::spec` (no server or database needed); the error names the
/// field and line.
pub fn check(json_output: bool, file: &std::path::Path) -> CliResult<()> {
    let yaml = read_input(file)?;
    match vetting_core::spec::parse_spec(&yaml) {
        Ok(_) => {
            if json_output {
                print_json(&json!({"valid": true}));
            } else {
                crate::outln!("{} is a valid spec", file.display());
            }
            Ok(())
        }
        Err(error) => Err(Failure::input(format!("{}: {error}", file.display()))),
    }
}
