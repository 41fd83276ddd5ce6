//! The error every parser returns when it cannot make sense of its input.

/// A tool output that could not be parsed. The message says what was wrong;
/// it never panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{tool}: input is empty")]
    Empty { tool: &'static str },
    #[error("{tool}: input is not valid UTF-8 (byte {offset})")]
    NotUtf8 { tool: &'static str, offset: usize },
    #[error("{tool}: invalid JSON")]
    Json {
        tool: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{tool}: invalid XML")]
    Xml {
        tool: &'static str,
        #[source]
        source: quick_xml::DeError,
    },
    #[error("{tool}: invalid YAML")]
    Yaml {
        tool: &'static str,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{tool}: {message}")]
    Format { tool: &'static str, message: String },
}

impl ParseError {
    /// A structural problem in otherwise well-formed input.
    pub fn format(tool: &'static str, message: impl Into<String>) -> Self {
        ParseError::Format {
            tool,
            message: message.into(),
        }
    }
}

/// Checks that `input` is non-empty UTF-8 and returns it as text.
pub fn text<'a>(tool: &'static str, input: &'a [u8]) -> Result<&'a str, ParseError> {
    let text = std::str::from_utf8(input).map_err(|error| ParseError::NotUtf8 {
        tool,
        offset: error.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(ParseError::Empty { tool });
    }
    Ok(text)
}

/// Parses non-empty UTF-8 JSON into `T`.
pub fn json<T: serde::de::DeserializeOwned>(
    tool: &'static str,
    input: &[u8],
) -> Result<T, ParseError> {
    let text = text(tool, input)?;
    serde_json::from_str(text).map_err(|source| ParseError::Json { tool, source })
}
