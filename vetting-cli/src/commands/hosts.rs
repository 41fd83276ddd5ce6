//! `vetting hosts add|list|show|edit|remove|import`.

use serde_json::{Map, Value, json};

use crate::cli::{HostsCommand, PowerArgs};
use crate::client::{Body, Method, encode};
use crate::error::{CliResult, Failure};
use crate::output::{Table, age, list, next_page_hint, print_fields, print_json, text, time};

use super::{Context, items, query, read_input};

pub async fn run(context: &Context, command: HostsCommand) -> CliResult<()> {
    let client = &context.client;
    match command {
        HostsCommand::Add {
            name,
            macs,
            profile,
            serial,
            power,
        } => {
            let body = json!({
                "name": name,
                "macs": macs,
                "spec_profile": profile,
                "serial": serial,
                "power": power_json(&power)?,
            });
            let host = client
                .call_json(Method::POST, "/hosts", Body::Json(body))
                .await?;
            show_hosts(context, &host, std::slice::from_ref(&host));
        }
        HostsCommand::List {
            include_removed,
            page,
        } => {
            let path = format!(
                "/hosts{}",
                query(&[
                    ("limit", page.limit.map(|limit| limit.to_string())),
                    ("before", page.before),
                    ("include_removed", include_removed.then(|| "true".into())),
                ])
            );
            let answer = client.get_json(&path).await?;
            show_hosts(context, &answer, &items(&answer));
            if !context.json {
                next_page_hint(&answer);
            }
        }
        HostsCommand::Show { name } => {
            let detail = client
                .get_json(&format!("/hosts/{}", encode(&name)))
                .await?;
            if context.json {
                print_json(&detail);
            } else {
                show_detail(&detail);
            }
        }
        HostsCommand::Edit {
            name,
            rename,
            add_macs,
            remove_macs,
            serial,
            profile,
            power,
            clear_power,
        } => {
            let mut edit = Map::new();
            if let Some(rename) = rename {
                edit.insert("rename".into(), rename.into());
            }
            if !add_macs.is_empty() {
                edit.insert("add_macs".into(), add_macs.into());
            }
            if !remove_macs.is_empty() {
                edit.insert("remove_macs".into(), remove_macs.into());
            }
            if let Some(serial) = serial {
                edit.insert("serial".into(), serial.into());
            }
            if let Some(profile) = profile {
                edit.insert("spec_profile".into(), profile.into());
            }
            if clear_power {
                edit.insert("power".into(), Value::Null);
            } else if let Some(power) = power_json(&power)? {
                edit.insert("power".into(), power);
            }
            if edit.is_empty() {
                return Err(Failure::input(
                    "nothing to change: give at least one of --rename, --add-mac, --remove-mac, \
                     --serial, --profile, --power, --clear-power",
                ));
            }
            let host = client
                .call_json(
                    Method::PATCH,
                    &format!("/hosts/{}", encode(&name)),
                    Body::Json(Value::Object(edit)),
                )
                .await?;
            show_hosts(context, &host, std::slice::from_ref(&host));
        }
        HostsCommand::Remove { name } => {
            let answer = client
                .call(
                    Method::DELETE,
                    &format!("/hosts/{}", encode(&name)),
                    Body::Empty,
                )
                .await?;
            // 204: no body; --json prints nothing, the exit code says it
            let body = answer.json()?;
            if context.json {
                if !body.is_null() {
                    print_json(&body);
                }
            } else {
                crate::outln!("removed host {name}");
            }
        }
        HostsCommand::Import { file } => {
            let csv = read_input(&file)?;
            let hosts = client
                .call_json(Method::POST, "/hosts/import", Body::Text("text/csv", csv))
                .await
                .map_err(|failure| {
                    Failure::new(
                        failure.exit,
                        format!("{}: {}", file.display(), failure.message),
                    )
                })?;
            show_hosts(context, &hosts, &items(&hosts));
        }
    }
    Ok(())
}

/// The stored power JSON of `--power KIND --power-opt KEY=VALUE ...`.
fn power_json(power: &PowerArgs) -> CliResult<Option<Value>> {
    let Some(driver) = power.power else {
        return Ok(None);
    };
    let mut settings = Map::new();
    settings.insert("driver".into(), driver.as_str().into());
    for option in &power.power_options {
        let Some((key, value)) = option.split_once('=') else {
            return Err(Failure::input(format!(
                "--power-opt `{option}` is not KEY=VALUE"
            )));
        };
        if key.is_empty() || key == "driver" {
            return Err(Failure::input(format!(
                "--power-opt `{option}`: the key must be a setting of the driver"
            )));
        }
        let value = match serde_json::from_str::<Value>(value) {
            Ok(parsed @ (Value::Number(_) | Value::Bool(_))) => parsed,
            _ => Value::String(value.to_string()),
        };
        settings.insert(key.to_string(), value);
    }
    if let Some(file) = &power.power_password_file {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(file)
        }
        .map_err(|error| {
            Failure::input(format!("--power-password-file {}: {error}", file.display()))
        })?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(Failure::input(format!(
                "--power-password-file {}: the file is empty",
                file.display()
            )));
        }
        settings.insert("password_plaintext".into(), password.into());
    }
    Ok(Some(Value::Object(settings)))
}

fn show_hosts(context: &Context, answer: &Value, hosts: &[Value]) {
    if context.json {
        print_json(answer);
        return;
    }
    let mut table = Table::new(&["NAME", "MACS", "PROFILE", "SERIAL", "POWER", "CREATED"]);
    for host in hosts {
        let mut name = text(host, "name");
        if host.get("removed_at_ms").is_some_and(|at| !at.is_null()) {
            name.push_str(" (removed)");
        }
        table.row(vec![
            name,
            list(host, "macs"),
            text(host, "spec_profile"),
            text(host, "serial"),
            host.get("power")
                .map(|power| text(power, "driver"))
                .unwrap_or_else(|| "-".into()),
            time(host, "created_at_ms"),
        ]);
    }
    table.print();
}

fn show_detail(detail: &Value) {
    let host = detail.get("host").unwrap_or(detail);
    print_fields(&[
        ("name", text(host, "name")),
        ("macs", list(host, "macs")),
        ("profile", text(host, "spec_profile")),
        ("serial", text(host, "serial")),
        ("system uuid", text(host, "system_uuid")),
        (
            "power",
            host.get("power")
                .filter(|power| !power.is_null())
                .map(Value::to_string)
                .unwrap_or_else(|| "-".into()),
        ),
        ("created", time(host, "created_at_ms")),
        ("removed", time(host, "removed_at_ms")),
        (
            "active run",
            detail
                .get("active_run")
                .filter(|run| !run.is_null())
                .map(|run| {
                    let run = run.get("run").unwrap_or(run);
                    format!("{} ({})", text(run, "id"), text(run, "state"))
                })
                .unwrap_or_else(|| "-".into()),
        ),
    ]);
    let recent = detail
        .get("recent_runs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !recent.is_empty() {
        crate::outln!();
        let mut table = Table::new(&["RUN", "STATE", "CREATED", "UPDATED"]);
        for run in &recent {
            let run = run.get("run").unwrap_or(run);
            table.row(vec![
                text(run, "id"),
                text(run, "state"),
                time(run, "created_at_ms"),
                age(run, "updated_at_ms"),
            ]);
        }
        table.print();
    }
}
