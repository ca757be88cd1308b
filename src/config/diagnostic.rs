//! Findings about a configuration file, and how they are shown.
//!
//! Every problem the pipeline finds — a TOML syntax error, a validation error, a lint
//! warning — is a [`Finding`]: a stable rule name, a severity, a message, the byte span
//! of the offending text and a `help:` line saying what to do. Rendering turns the span
//! into `file:line:col` and shows the source line with a caret, the way the Rust
//! compiler does, or emits the same findings as JSON with stable field names
//! (`rule`, `severity`, `message`, `file`, `line`, `column`, `help`) for scripts.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, never fails anything.
    Note,
    /// A risk: the config works but may not do what its author expects. Fails `check`
    /// only under `--deny-warnings`.
    Warning,
    /// The config cannot be served as written.
    Error,
}

impl Severity {
    /// The word shown in text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Stable kebab-case name of the rule that produced it (`unknown-pool`, `toml-syntax`).
    pub rule: &'static str,
    /// How serious it is (after `[lint.allow]` was applied, see `allowed`).
    pub severity: Severity,
    /// What is wrong, naming the field, pool or backend.
    pub message: String,
    /// Byte range of the offending text in the file, when there is one.
    pub span: Option<Range<usize>>,
    /// What to do about it.
    pub help: Option<String>,
    /// Set when `[lint.allow]` silenced the rule: the operator's reason.
    pub allowed: Option<String>,
}

impl Finding {
    /// An error of `rule` at `span`.
    pub fn error(
        rule: &'static str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            rule,
            severity: Severity::Error,
            message: message.into(),
            span,
            help: None,
            allowed: None,
        }
    }

    /// A warning of `rule` at `span`.
    pub fn warning(
        rule: &'static str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(rule, span, message)
        }
    }

    /// A note of `rule` at `span`: worth knowing, never fails anything.
    pub fn note(
        rule: &'static str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Note,
            ..Finding::error(rule, span, message)
        }
    }

    /// The same finding with a `help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A configuration file's name and text, kept so findings can be located and shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The path as the user gave it.
    pub path: PathBuf,
    /// The whole file.
    pub text: String,
}

/// A 1-based line and column (in characters) of a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Source {
    /// A source read from `path` (a regular file of at most 16 MiB), or why not.
    pub fn read(path: &Path) -> Result<Source, super::files::FileError> {
        Ok(Source {
            path: path.to_path_buf(),
            text: super::files::read_config(path)?,
        })
    }

    /// Line and column of byte `offset` (clamped to the text). Scans the text: to
    /// locate many offsets, build one [`LineIndex`].
    pub fn locate(&self, offset: usize) -> Location {
        LineIndex::new(&self.text).locate(offset)
    }
}

/// Where each line of a text starts, so that locating an offset costs a binary search
/// instead of a scan of the text: rendering n findings of a file of n lines is then
/// O(n log n), not O(n²) (issue 12, defect 10).
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line; `starts[0]` is 0.
    starts: Vec<usize>,
    /// Whether each line is ASCII, so its columns are byte distances.
    ascii: Vec<bool>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text` in one pass.
    pub fn new(text: &'a str) -> Self {
        let starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let ascii = starts
            .iter()
            .enumerate()
            .map(|(line, &start)| {
                let end = starts.get(line + 1).copied().unwrap_or(text.len());
                text.as_bytes()[start..end].is_ascii()
            })
            .collect();
        LineIndex {
            text,
            starts,
            ascii,
        }
    }

    /// Line and column of byte `offset` (clamped to the text).
    pub fn locate(&self, offset: usize) -> Location {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        // `starts[0]` is 0 <= offset, so at least one start qualifies.
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        let column = if self.ascii[line - 1] {
            offset - line_start
        } else {
            self.text[line_start..offset].chars().count()
        };
        Location {
            line,
            column: column + 1,
        }
    }

    /// The text of 1-based line `line`, without its line ending ("" past the end).
    pub fn line_text(&self, line: usize) -> &'a str {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .starts
            .get(line)
            .map_or(self.text.len(), |next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Renders findings the way rustc does: header, `--> file:line:col`, the source line,
/// a caret under the offending text, then `= help:` and `= note:` lines.
pub fn render_text(source: &Source, findings: &[Finding]) -> String {
    let mut out = String::new();
    let lines = LineIndex::new(&source.text);
    for finding in findings {
        render_one(&mut out, source, &lines, finding);
        out.push('\n');
    }
    out
}

fn render_one(out: &mut String, source: &Source, lines: &LineIndex<'_>, finding: &Finding) {
    let file = source.path.display();
    let _ = writeln!(
        out,
        "{}[{}]: {}",
        finding.severity.as_str(),
        finding.rule,
        finding.message
    );
    let gutter;
    match &finding.span {
        Some(span) => {
            let start = lines.locate(span.start);
            let line_text = lines.line_text(start.line);
            let number = start.line.to_string();
            gutter = " ".repeat(number.len());
            let _ = writeln!(out, "{gutter}--> {file}:{}:{}", start.line, start.column);
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(out, "{number} | {line_text}");
            // Underline to the end of the span, or of the line when the span runs past it.
            let end = lines.locate(span.end.max(span.start + 1));
            let line_chars = line_text.chars().count();
            let last = if end.line == start.line {
                end.column.min(line_chars + 1)
            } else {
                line_chars + 1
            };
            let width = last.saturating_sub(start.column).max(1);
            let _ = writeln!(
                out,
                "{gutter} | {}{}",
                " ".repeat(start.column - 1),
                "^".repeat(width)
            );
        }
        None => {
            gutter = String::from(" ");
            let _ = writeln!(out, "{gutter}--> {file}");
        }
    }
    if let Some(help) = &finding.help {
        let _ = writeln!(out, "{gutter} = help: {help}");
    }
    if let Some(reason) = &finding.allowed {
        let _ = writeln!(out, "{gutter} = note: allowed: {reason}");
    }
}

/// A finding as `--format json` shows it: stable field names, 1-based positions.
#[derive(Debug, Serialize)]
pub struct JsonFinding<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// `error`, `warning` or `note`.
    pub severity: Severity,
    /// What is wrong.
    pub message: &'a str,
    /// The file as given on the command line.
    pub file: String,
    /// 1-based line, or null when the finding has no location.
    pub line: Option<usize>,
    /// 1-based column in characters, or null.
    pub column: Option<usize>,
    /// What to do, or null.
    pub help: Option<&'a str>,
    /// The `[lint.allow]` reason when the rule was silenced, or null.
    pub allowed: Option<&'a str>,
}

/// The findings as a pretty-printed JSON array.
pub fn render_json(source: &Source, findings: &[Finding]) -> String {
    let rows = json_findings(source, findings);
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| String::from("[]"))
}

/// The findings as `--format json` shows them, to embed in other JSON.
pub fn json_findings<'a>(source: &Source, findings: &'a [Finding]) -> Vec<JsonFinding<'a>> {
    let lines = LineIndex::new(&source.text);
    findings
        .iter()
        .map(|f| {
            let at = f.span.as_ref().map(|s| lines.locate(s.start));
            JsonFinding {
                rule: f.rule,
                severity: f.severity,
                message: &f.message,
                file: source.path.display().to_string(),
                line: at.map(|l| l.line),
                column: at.map(|l| l.column),
                help: f.help.as_deref(),
                allowed: f.allowed.as_deref(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            path: PathBuf::from("lb.toml"),
            text: text.to_string(),
        }
    }

    #[test]
    fn locates_lines_and_character_columns() {
        let s = source("a = 1\nname = \"é\" x\n");
        assert_eq!(s.locate(0), Location { line: 1, column: 1 });
        assert_eq!(s.locate(6), Location { line: 2, column: 1 });
        // "x" sits after a two-byte character: column counts characters.
        let x = s.text.find('x').unwrap();
        assert_eq!(
            s.locate(x),
            Location {
                line: 2,
                column: 12
            }
        );
    }

    #[test]
    fn the_line_index_locates_like_a_scan_of_the_text() {
        let text = "a = 1\r\nname = \"é\" x\n\n[pool.web]\nlast = \"ü\"";
        let index = LineIndex::new(text);
        for offset in 0..=text.len() + 2 {
            let clamped = floor_char_boundary(text, offset.min(text.len()));
            let before = &text[..clamped];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let expected = Location {
                line: before.matches('\n').count() + 1,
                column: before[line_start..].chars().count() + 1,
            };
            assert_eq!(index.locate(offset), expected, "offset {offset}");
        }
        for line in 0..=7_usize {
            let expected = text
                .lines()
                .nth(line.saturating_sub(1))
                .filter(|_| line > 0)
                .unwrap_or("")
                .trim_end_matches('\r');
            assert_eq!(index.line_text(line), expected, "line {line}");
        }
    }

    #[test]
    fn text_rendering_points_a_caret_at_the_span() {
        let s = source("[pool.web]\nalgorithm = \"fastest\"\n");
        let start = s.text.find("\"fastest\"").unwrap();
        let finding = Finding::error("invalid-value", Some(start..start + 9), "bad")
            .with_help("use round_robin");
        let text = render_text(&s, &[finding]);
        assert!(text.contains("error[invalid-value]: bad"), "{text}");
        assert!(text.contains("--> lb.toml:2:13"), "{text}");
        assert!(text.contains("2 | algorithm = \"fastest\""), "{text}");
        assert!(text.contains("  |             ^^^^^^^^^\n"), "{text}");
        assert!(text.contains("= help: use round_robin"), "{text}");
    }

    #[test]
    fn json_rendering_has_the_stable_fields() {
        let s = source("x = 1\n");
        let json = render_json(&s, &[Finding::warning("r", Some(0..1), "m")]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let row = &value[0];
        assert_eq!(row["rule"], "r");
        assert_eq!(row["severity"], "warning");
        assert_eq!(row["file"], "lb.toml");
        assert_eq!(row["line"], 1);
        assert_eq!(row["column"], 1);
        assert!(row["help"].is_null());
    }
}
