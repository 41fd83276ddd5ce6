//! A small name/value tree that both `nvidia-smi -q -x` (XML elements) and
//! `nvidia-smi -q` (indented `Key : Value` lines) are read into, with the
//! lookups and value cleaning the field mapping needs.

use quick_xml::events::Event;

use crate::ParseError;

use super::TOOL;

/// The deepest nesting read (nvidia-smi nests about 6 levels); deeper input
/// is not nvidia-smi output, and a bounded tree keeps drops shallow.
const MAX_DEPTH: usize = 64;

/// One element (XML) or one line (text): its name, its own text value, and
/// its children in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Node {
    pub name: String,
    pub value: Option<String>,
    pub children: Vec<Node>,
}

impl Node {
    fn named(name: &str) -> Self {
        Node {
            name: name.to_string(),
            value: None,
            children: Vec::new(),
        }
    }

    /// The first direct child with this name (case-insensitive).
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|child| child.name.eq_ignore_ascii_case(name))
    }

    /// Every direct child with this name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children
            .iter()
            .filter(move |child| child.name.eq_ignore_ascii_case(name))
    }

    /// Follows a path of child names.
    pub fn path(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, name| node.child(name))
    }

    /// The first descendant (depth first) with this name.
    pub fn find(&self, name: &str) -> Option<&Node> {
        for child in &self.children {
            if child.name.eq_ignore_ascii_case(name) {
                return Some(child);
            }
            if let Some(found) = child.find(name) {
                return Some(found);
            }
        }
        None
    }

    /// The meaningful value at a path (see [`meaningful`]).
    pub fn text(&self, path: &[&str]) -> Option<&str> {
        self.path(path)
            .and_then(|node| node.value.as_deref())
            .and_then(meaningful)
    }

    /// The first meaningful value among several paths.
    pub fn text_any(&self, paths: &[&[&str]]) -> Option<&str> {
        paths.iter().find_map(|path| self.text(path))
    }

    /// The leading number of the value at a path (`"81559 MiB"` → 81559).
    pub fn number(&self, path: &[&str]) -> Option<f64> {
        self.text(path).and_then(leading_number)
    }

    /// The first number among several paths.
    pub fn number_any(&self, paths: &[&[&str]]) -> Option<f64> {
        paths.iter().find_map(|path| self.number(path))
    }

    /// The value at a path as a whole count.
    pub fn count(&self, path: &[&str]) -> Option<u64> {
        self.text(path).and_then(leading_count)
    }
}

/// Values that mean "no value": `N/A`, `[N/A]`, `[Not Supported]`,
/// `Requested functionality has been deprecated`, and empty strings.
pub(super) fn meaningful(value: &str) -> Option<&str> {
    let value = value.trim();
    let bare = value.trim_start_matches('[').trim_end_matches(']').trim();
    let lower = bare.to_ascii_lowercase();
    let empty = bare.is_empty()
        || lower == "n/a"
        || lower == "na"
        || lower == "none"
        || lower == "not supported"
        || lower == "unknown error"
        || lower == "insufficient permissions"
        || lower == "gpu requires reset"
        || lower.starts_with("requested functionality has been deprecated")
        || lower.starts_with("not available");
    if empty { None } else { Some(value) }
}

/// The number a value starts with (`"16.48 W"`, `"-2 C"`, `"16x"`, `"0 us"`).
pub(super) fn leading_number(value: &str) -> Option<f64> {
    let value = value.trim();
    let end = value
        .char_indices()
        .find(|&(index, character)| {
            !(character.is_ascii_digit() || character == '.' || (index == 0 && character == '-'))
        })
        .map_or(value.len(), |(index, _)| index);
    value[..end]
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// A non-negative whole count a value starts with.
pub(super) fn leading_count(value: &str) -> Option<u64> {
    let value = value.trim();
    let end = value
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(value.len());
    value[..end].parse::<u64>().ok()
}

/// `Yes`/`No`-style flags.
pub(super) fn yes_no(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "enabled" => Some(true),
        "no" | "false" | "disabled" => Some(false),
        _ => None,
    }
}

/// Reads an XML document into a tree rooted at a nameless node whose only
/// child is the document element. An unclosed element (a truncated file) is
/// an error.
pub(super) fn read_xml(text: &str) -> Result<Node, ParseError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = vec![Node::default()];
    let invalid = |source: quick_xml::Error| ParseError::Xml {
        tool: TOOL,
        source: quick_xml::DeError::InvalidXml(source),
    };
    loop {
        match reader.read_event().map_err(invalid)? {
            Event::Start(start) => {
                if stack.len() > MAX_DEPTH {
                    return Err(ParseError::format(
                        TOOL,
                        "XML nested too deep for nvidia-smi output",
                    ));
                }
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                stack.push(Node::named(&name));
            }
            Event::Empty(empty) => {
                let name = String::from_utf8_lossy(empty.name().as_ref()).into_owned();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::named(&name));
                }
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(invalid)?;
                append_text(&mut stack, &text);
            }
            Event::CData(data) => {
                let text = String::from_utf8_lossy(&data.into_inner()).into_owned();
                append_text(&mut stack, &text);
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err(ParseError::format(
                        TOOL,
                        "XML closes an element never opened",
                    ));
                }
                if let Some(done) = stack.pop()
                    && let Some(parent) = stack.last_mut()
                {
                    parent.children.push(done);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if stack.len() != 1 {
        return Err(ParseError::format(
            TOOL,
            format!(
                "XML ends inside <{}> (truncated output)",
                stack.last().map_or("", |node| node.name.as_str())
            ),
        ));
    }
    let root = stack.pop().unwrap_or_default();
    if root.children.is_empty() {
        return Err(ParseError::format(TOOL, "XML has no document element"));
    }
    Ok(root)
}

fn append_text(stack: &mut [Node], text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if let Some(node) = stack.last_mut() {
        match &mut node.value {
            Some(value) => {
                value.push(' ');
                value.push_str(text);
            }
            None => node.value = Some(text.to_string()),
        }
    }
}

/// Reads `nvidia-smi -q` text: each `Key : Value` or `Key` line becomes a
/// node, the child of the nearest line above it that is indented less.
pub(super) fn read_query_text(text: &str) -> Node {
    // (indent, node) from the root down to the most recent line.
    let mut stack: Vec<(isize, Node)> = vec![(-1, Node::default())];
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with("====") {
            continue;
        }
        let indent = isize::try_from(line.len() - line.trim_start().len()).unwrap_or(isize::MAX);
        let node = match split_key_value(line.trim()) {
            Some((key, value)) => Node {
                name: key.to_string(),
                value: Some(value.to_string()),
                children: Vec::new(),
            },
            None => Node::named(line.trim()),
        };
        while stack.len() > 1
            && (stack.len() > MAX_DEPTH || stack.last().is_some_and(|(level, _)| *level >= indent))
        {
            fold_last(&mut stack);
        }
        stack.push((indent, node));
    }
    while stack.len() > 1 {
        fold_last(&mut stack);
    }
    stack.pop().map(|(_, node)| node).unwrap_or_default()
}

fn fold_last(stack: &mut Vec<(isize, Node)>) {
    if let Some((_, done)) = stack.pop()
        && let Some((_, parent)) = stack.last_mut()
    {
        parent.children.push(done);
    }
}

/// Splits `Key    : Value` at the first colon that follows a space (bus
/// ids and Windows paths hold colons too).
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let colon = (1..bytes.len()).find(|&index| bytes[index] == b':' && bytes[index - 1] == b' ')?;
    Some((line[..colon].trim(), line[colon + 1..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_units() {
        assert_eq!(leading_number("16.48 W"), Some(16.48));
        assert_eq!(leading_number("-2 C"), Some(-2.0));
        assert_eq!(leading_number("16x"), Some(16.0));
        assert_eq!(leading_number("N/A"), None);
        assert_eq!(leading_count("81559 MiB"), Some(81559));
        assert_eq!(leading_count("-1"), None);
    }

    #[test]
    fn placeholders_are_not_values() {
        assert_eq!(meaningful("[N/A]"), None);
        assert_eq!(meaningful("N/A"), None);
        assert_eq!(
            meaningful("[Requested functionality has been deprecated]"),
            None
        );
        assert_eq!(meaningful(" 0 "), Some("0"));
    }

    #[test]
    fn query_text_nests_by_indent() {
        let root = read_query_text(
            "==LOG==\nAttached GPUs : 1\nGPU 00000000:01:00.0\n    Product Name : X\n    PCI\n        Bus Id : 00000000:01:00.0\n    Remapped Rows : N/A\n",
        );
        let gpu = root.child("GPU 00000000:01:00.0").unwrap();
        assert_eq!(gpu.text(&["Product Name"]), Some("X"));
        assert_eq!(gpu.text(&["PCI", "Bus Id"]), Some("00000000:01:00.0"));
        assert_eq!(gpu.text(&["Remapped Rows"]), None);
        assert_eq!(root.text(&["Attached GPUs"]), Some("1"));
    }

    #[test]
    fn truncated_xml_is_an_error() {
        assert!(read_xml("<a><b>1</b>").is_err());
        assert!(read_xml("<a><b>1</c></a>").is_err());
        assert!(read_xml("<a><b>1</b></a>").is_ok());
    }
}
