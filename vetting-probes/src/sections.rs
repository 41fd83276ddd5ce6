//! Splits captures that hold several tool outputs under `####` banner
//! headers (a line of `#`s, one or more `# title` lines, a line of `#`s) into
//! one section per output, so each part can go to its own parser.

use serde::{Deserialize, Serialize};

/// The fewest `#` characters that make a line a banner.
const BANNER_MIN_HASHES: usize = 4;

/// One output of a capture: the title lines of its banner header (without
/// the leading `# `, joined by newlines) and the text under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub body: String,
}

impl Section {
    /// The first title line, e.g. `idle :: query (-q)`.
    pub fn heading(&self) -> &str {
        self.title.lines().next().unwrap_or("").trim()
    }

    /// The command that produced the section, from a `$ command` title line.
    pub fn command(&self) -> Option<&str> {
        self.title
            .lines()
            .find_map(|line| line.trim().strip_prefix("$ "))
            .map(str::trim)
    }
}

/// Whether a line is a banner: nothing but `#`s, at least four of them.
fn is_banner(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.len() >= BANNER_MIN_HASHES && trimmed.bytes().all(|byte| byte == b'#')
}

/// Splits `text` into sections. Text before the first banner becomes a
/// section with an empty title (when it is not blank); text without any
/// banner is one section with an empty title.
pub fn split(text: &str) -> Vec<Section> {
    let lines: Vec<&str> = text.lines().collect();
    let mut sections = Vec::new();
    let mut title_lines: Vec<&str> = Vec::new();
    let mut body_lines: Vec<&str> = Vec::new();
    let mut in_section = false;
    let mut index = 0;

    while index < lines.len() {
        let line = lines[index];
        if !is_banner(line) {
            body_lines.push(line);
            index += 1;
            continue;
        }
        // A banner opens a header: close what came before it.
        if in_section || body_lines.iter().any(|line| !line.trim().is_empty()) {
            sections.push(make_section(&title_lines, &body_lines));
        }
        title_lines.clear();
        body_lines.clear();
        in_section = true;
        index += 1;
        // Title lines run until the closing banner, or until a line that is
        // not a `#` comment (a header without its closing banner).
        while index < lines.len() {
            let line = lines[index];
            if is_banner(line) {
                index += 1;
                break;
            }
            match line.trim_start().strip_prefix('#') {
                Some(title) => {
                    title_lines.push(title.strip_prefix(' ').unwrap_or(title));
                    index += 1;
                }
                None => break,
            }
        }
    }
    if in_section || body_lines.iter().any(|line| !line.trim().is_empty()) || sections.is_empty() {
        sections.push(make_section(&title_lines, &body_lines));
    }
    sections
}

fn make_section(title_lines: &[&str], body_lines: &[&str]) -> Section {
    Section {
        title: title_lines
            .iter()
            .map(|line| line.trim_end())
            .collect::<Vec<_>>()
            .join("\n"),
        body: body_lines.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_banners_is_one_untitled_section() {
        let sections = split("a, b\n1, 2\n");
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].title, "");
        assert_eq!(sections[0].body, "a, b\n1, 2");
    }

    #[test]
    fn banners_split_titles_and_bodies() {
        let text = "#####\n# idle :: query (-q)\n# $ nvidia-smi -q\n#####\nbody one\n# gpu pid\n\
                    #####\n# second\n#####\nbody two\n";
        let sections = split(text);
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].heading(), "idle :: query (-q)");
        assert_eq!(sections[0].command(), Some("nvidia-smi -q"));
        assert_eq!(sections[0].body, "body one\n# gpu pid");
        assert_eq!(sections[1].title, "second");
        assert_eq!(sections[1].command(), None);
        assert_eq!(sections[1].body, "body two");
    }

    #[test]
    fn text_before_the_first_banner_is_kept() {
        let sections = split("preamble\n####\n# t\n####\nx");
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].title, "");
        assert_eq!(sections[0].body, "preamble");
        assert_eq!(sections[1].body, "x");
    }

    #[test]
    fn header_without_closing_banner_ends_at_first_plain_line() {
        let sections = split("####\n# title\nbody\n");
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].title, "title");
        assert_eq!(sections[0].body, "body");
    }

    #[test]
    fn empty_text_is_one_empty_section() {
        assert_eq!(
            split(""),
            vec![Section {
                title: String::new(),
                body: String::new()
            }]
        );
    }
}
