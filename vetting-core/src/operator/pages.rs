//! The list pages' limits and cursors. A cursor is opaque to callers:
//! base64url of where the previous page ended (`created_at_ms:id` for
//! runs, the name for hosts). A malformed one is refused, naming it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::PageRequest;
use crate::error::{OrchestratorError, Result};
use crate::store::runs::RunsAfter;

/// The page's limit: the default when absent, refused outside
/// `1..=MAX_LIMIT`.
pub(crate) fn limit_of(page: &PageRequest) -> Result<u64> {
    match page.limit {
        None => Ok(u64::from(PageRequest::DEFAULT_LIMIT)),
        Some(limit) if (1..=PageRequest::MAX_LIMIT).contains(&limit) => Ok(u64::from(limit)),
        Some(limit) => Err(OrchestratorError::BadRequest(format!(
            "limit {limit} is out of range: a page holds 1 to {} items",
            PageRequest::MAX_LIMIT
        ))),
    }
}

fn malformed(cursor: &str) -> OrchestratorError {
    let shown: String = cursor.chars().take(80).collect();
    OrchestratorError::BadRequest(format!(
        "the cursor `{shown}` (`before`) is malformed: pass the `next` of the previous page"
    ))
}

fn decode(cursor: &str) -> Result<String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| malformed(cursor))?;
    String::from_utf8(bytes).map_err(|_| malformed(cursor))
}

pub(crate) fn run_cursor(after: &RunsAfter) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", after.created_at_ms, after.id))
}

pub(crate) fn parse_run_cursor(cursor: &str) -> Result<RunsAfter> {
    let text = decode(cursor)?;
    let (created, id) = text.split_once(':').ok_or_else(|| malformed(cursor))?;
    let created_at_ms: i64 = created.parse().map_err(|_| malformed(cursor))?;
    if id.is_empty() {
        return Err(malformed(cursor));
    }
    Ok(RunsAfter {
        created_at_ms,
        id: id.to_string(),
    })
}

pub(crate) fn host_cursor(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name)
}

pub(crate) fn parse_host_cursor(cursor: &str) -> Result<String> {
    let name = decode(cursor)?;
    if name.is_empty() {
        return Err(malformed(cursor));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_named() {
        let after = RunsAfter {
            created_at_ms: 1_800_000_000_123,
            id: "0b1c-uuid".into(),
        };
        assert_eq!(parse_run_cursor(&run_cursor(&after)).unwrap(), after);
        assert_eq!(parse_host_cursor(&host_cursor("rack:1")).unwrap(), "rack:1");
        for bad in [
            "%%%",
            "",
            &URL_SAFE_NO_PAD.encode("nocolon"),
            &URL_SAFE_NO_PAD.encode("x:1"),
        ] {
            let message = parse_run_cursor(bad).unwrap_err().to_string();
            assert!(message.contains("cursor"), "{message}");
        }
        assert!(
            limit_of(&PageRequest {
                limit: Some(1001),
                before: None
            })
            .is_err()
        );
        assert!(
            limit_of(&PageRequest {
                limit: Some(0),
                before: None
            })
            .is_err()
        );
        assert_eq!(limit_of(&PageRequest::default()).unwrap(), 50);
    }
}
