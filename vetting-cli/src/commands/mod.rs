//! One module per command group; each command is requests to the operator
//! API through [`Client`] and the rendering of its answer.

pub mod dispatch;
pub mod hosts;
pub mod local;
pub mod profiles;
pub mod runs;
pub mod tokens;

use serde_json::Value;

use crate::client::Client;
use crate::error::{CliResult, Failure};

/// What every API command is given.
#[derive(Debug, Clone)]
pub struct Context {
    pub client: Client,
    /// `--json`: print the API's JSON instead of tables.
    pub json: bool,
}

/// Reads a file the command was given (an input error when it cannot).
pub fn read_input(path: &std::path::Path) -> CliResult<String> {
    std::fs::read_to_string(path)
        .map_err(|error| Failure::input(format!("cannot read {}: {error}", path.display())))
}

/// The query string of `pairs` whose value is set (`?a=1&b=2`, or empty).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| {
            value
                .as_ref()
                .map(|value| format!("{key}={}", crate::client::encode(value)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The items of a page (`{"items": [...]}`) or of a plain list.
pub fn items(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        other => other
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }
}
