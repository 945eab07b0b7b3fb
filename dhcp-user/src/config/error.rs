//! Where a configuration error is: file, line and column, found in the
//! source text (serde gives spans for syntax and type errors; the checks
//! after parsing find the table or key they are about).

use std::fmt;

/// A configuration error, located in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source_name: String,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source_name, self.reason)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.source_name, self.line, self.column, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Line of the `index`-th `[[child]]` inside the `parent_index`-th
/// `[[parent]]`.
pub(super) fn nested_line(
    text: &str,
    parent: &str,
    parent_index: usize,
    child: &str,
    index: usize,
) -> Option<usize> {
    let p_header = format!("[[{parent}]]");
    let c_header = format!("[[{child}]]");
    let mut parent_seen = None;
    let mut n = 0;
    for (ln, l) in text.lines().enumerate() {
        let l = l.trim_start();
        if l.starts_with(&p_header) {
            parent_seen = Some(parent_seen.map_or(0, |p| p + 1));
        } else if l.starts_with(&c_header) && parent_seen == Some(parent_index) {
            if n == index {
                return Some(ln + 1);
            }
            n += 1;
        }
    }
    None
}

/// Finds the line of the `index`-th `[[table]]` header, for errors that are
/// only found after parsing (e.g. a duplicate interface).
pub(super) fn table_line(text: &str, table: &str, index: usize) -> usize {
    let header = format!("[[{table}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(&header))
        .nth(index)
        .map_or(0, |(n, _)| n + 1)
}

/// Line of the first line starting with `key` (a key or a table header).
pub(super) fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map_or(0, |n| n + 1)
}
