//! `vetting tokens create|list|revoke`.

use serde_json::{Value, json};

use crate::cli::TokensCommand;
use crate::client::{Body, Method, encode};
use crate::error::CliResult;
use crate::output::{Table, print_json, text, time};

use super::{Context, items};

pub async fn run(context: &Context, command: TokensCommand) -> CliResult<()> {
    let client = &context.client;
    match command {
        TokensCommand::Create { name, role } => {
            let created = client
                .call_json(
                    Method::POST,
                    "/tokens",
                    Body::Json(json!({"name": name, "role": role.as_str()})),
                )
                .await?;
            if context.json {
                print_json(&created);
            } else {
                // the secret alone on stdout, so that
                // `VETTING_TOKEN=$(vetting tokens create ...)` works
                eprintln!(
                    "token {name} ({}) created; it is shown this once:",
                    role.as_str()
                );
                crate::outln!("{}", text(&created, "secret"));
            }
        }
        TokensCommand::List => {
            let tokens = client.get_json("/tokens").await?;
            if context.json {
                print_json(&tokens);
            } else {
                print_tokens(&items(&tokens));
            }
        }
        TokensCommand::Revoke { name } => {
            let token = client
                .call_json(
                    Method::DELETE,
                    &format!("/tokens/{}", encode(&name)),
                    Body::Empty,
                )
                .await?;
            if context.json {
                print_json(&token);
            } else {
                crate::outln!("revoked token {name}");
            }
        }
    }
    Ok(())
}

fn print_tokens(tokens: &[Value]) {
    let mut table = Table::new(&["NAME", "ROLE", "CREATED", "BY", "LAST USED", "REVOKED"]);
    for token in tokens {
        table.row(vec![
            text(token, "name"),
            text(token, "role"),
            time(token, "created_at_ms"),
            text(token, "created_by"),
            time(token, "last_used_at_ms"),
            time(token, "revoked_at_ms"),
        ]);
    }
    table.print();
}
