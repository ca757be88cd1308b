//! Other load balancers' configs, checked with evenkeel's rules (`check --from`).
//!
//! ```text
//!  nginx.conf (+ includes) ──parse──► directives ──translate──► evenkeel TOML text
//!                                                                + where each part came from
//!                                                                + what was not translated
//!                 findings on the original files ◄──map spans── check (validate + lint)
//! ```
//!
//! The translation is evenkeel's config model written as text, so every rule `check`
//! runs judges it as it judges a native config; each finding is then placed back on
//! the directive it came from, with help in the other product's terms where evenkeel's
//! would not help.

pub mod haproxy;
pub mod nginx;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::diagnostic::{Finding, Severity, Source};
use super::files;

/// A product whose configs evenkeel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// NGINX (open source): `nginx.conf` and its includes.
    Nginx,
    /// HAProxy: `haproxy.cfg`, or a folder of `*.cfg` files.
    Haproxy,
}

impl Product {
    /// Its name as people write it.
    pub fn name(self) -> &'static str {
        match self {
            Product::Nginx => "NGINX",
            Product::Haproxy => "HAProxy",
        }
    }
}

/// Reads and translates the config of `product` at `path`.
pub fn read(product: Product, path: &Path) -> Result<Translated, ParseError> {
    Ok(match product {
        Product::Nginx => nginx::translate(&nginx::parse::read(path)?),
        Product::Haproxy => haproxy::translate(&haproxy::parse::read(path)?),
    })
}

/// Reads, translates and checks the config of `product` at `path`: what `check --from`
/// prints.
pub fn audit(product: Product, path: &Path) -> Result<(Translated, Report), ParseError> {
    let translated = read(product, path)?;
    let reword = match product {
        Product::Nginx => nginx::reword,
        Product::Haproxy => haproxy::reword,
    };
    let report = check(&translated, &super::folder_of(path), reword);
    Ok((translated, report))
}

/// A config translated from another product.
#[derive(Clone, Debug)]
pub struct Translated {
    /// The product (`NGINX`, `HAProxy`).
    pub product: &'static str,
    /// The evenkeel config text.
    pub text: String,
    /// For byte ranges of `text`: the file and range of the directive they came from.
    pub origins: Vec<(Range<usize>, usize, Range<usize>)>,
    /// The files read, the main one first.
    pub sources: Vec<Arc<Source>>,
    /// What was not translated, or only approximately: (file, finding on that file).
    pub notes: Vec<(usize, Finding)>,
    /// Pools the translation made up (a backup pool for `backup` servers): rules about
    /// a pool's own shape say nothing about the other product's config there.
    pub made_up: Vec<String>,
}

/// Findings on the files of a translated config.
#[derive(Clone, Debug)]
pub struct Report {
    /// The files, the main one first.
    pub sources: Vec<Arc<Source>>,
    /// Findings, by file index.
    pub findings: Vec<(usize, Finding)>,
    /// The translation as `check` judged it (its config, when it has no errors).
    pub checked: super::Checked,
}

impl Report {
    /// Errors and warnings not silenced.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|(_, f)| f.severity == severity && f.allowed.is_none())
            .count()
    }
}

/// Checks `translated` with every rule `check` runs (relative paths resolve against
/// `base_dir`), and puts each finding on the directive it came from.
pub fn check(translated: &Translated, base_dir: &Path, reword: fn(&mut Finding)) -> Report {
    let generated = Source {
        path: translated.sources[0].path.with_extension("evenkeel.toml"),
        text: translated.text.clone(),
    };
    let checked = super::check_source_in(generated, base_dir);
    let mut findings: Vec<(usize, Finding)> = translated.notes.clone();
    // The pool a finding names (`pool "NAME"`), as every pool rule words it.
    let pool_of = |f: &Finding| {
        f.message
            .split_once("pool \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(name, _)| name.to_string())
    };
    for mut finding in checked.findings.clone() {
        match finding.rule {
            // Said of the translation, not of the other product's config: its pools
            // are all proxied to, and its servers answering locally are noted already.
            "unused-pool" | "listener-without-routes" => continue,
            "no-listener" => {
                findings.push((
                    0,
                    Finding::note(
                        "not-translated",
                        None,
                        "nothing to judge: no server proxies to an upstream",
                    ),
                ));
                continue;
            }
            _ => {}
        }
        let pool = pool_of(&finding);
        if pool
            .as_ref()
            .is_some_and(|p| translated.made_up.contains(p))
            && matches!(finding.rule, "single-backend-pool" | "no-health-check")
        {
            continue;
        }
        // Passive checks are what the other product has: with them, the absence of
        // active checks is worth knowing, not a warning to fix.
        let passive = pool
            .as_ref()
            .and_then(|p| checked.config.as_ref().and_then(|c| c.pool(p)))
            .is_some_and(|p| p.outlier.consecutive_failures > 0);
        if finding.rule == "no-health-check" && passive {
            finding.severity = Severity::Note;
        }
        // Origins are lines in order, none overlapping: the last starting at or before
        // the finding is its line.
        let origin = finding.span.as_ref().and_then(|span| {
            let at = translated
                .origins
                .partition_point(|(range, _, _)| range.start <= span.start);
            at.checked_sub(1)
                .map(|i| &translated.origins[i])
                .filter(|(range, _, _)| span.start < range.end)
        });
        let file = match origin {
            Some((_, file, span)) => {
                finding.span = Some(span.clone());
                *file
            }
            None => {
                finding.span = None;
                0
            }
        };
        reword(&mut finding);
        findings.push((file, finding));
    }
    findings.sort_by_key(|(file, f)| {
        (
            std::cmp::Reverse(f.severity),
            *file,
            f.span.as_ref().map(|s| s.start),
        )
    });
    Report {
        sources: translated.sources.clone(),
        findings,
        checked,
    }
}

/// Builds the evenkeel text line by line, remembering where each line came from.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) text: String,
    pub(crate) origins: Vec<(Range<usize>, usize, Range<usize>)>,
}

impl Writer {
    /// Writes `line` (and a newline), from `origin` (file, span) when given.
    pub(crate) fn line(&mut self, line: &str, origin: Option<(usize, &Range<usize>)>) {
        let start = self.text.len();
        self.text.push_str(line);
        self.text.push('\n');
        if let Some((file, span)) = origin {
            self.origins
                .push((start..self.text.len(), file, span.clone()));
        }
    }
}

/// A TOML string literal of `value`.
pub(crate) fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// Milliseconds as an evenkeel duration.
pub(crate) fn duration_text(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `shown` as an evenkeel name (letters, digits, `-`, `_`; at most 48 characters), not
/// one of `taken`.
pub(crate) fn unique_name(shown: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let clean: String = shown
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    let base: String = if clean.is_empty() {
        "pool".into()
    } else {
        clean.chars().take(48).collect()
    };
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The evenkeel listener of `address`.
pub(crate) fn listener_name(address: &str) -> String {
    format!(
        "listen-{}",
        address.replace([':', '.', '[', ']'], "-").trim_matches('-')
    )
}

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A file could not be read.
    #[error("{0}")]
    File(#[from] files::FileError),
    /// The syntax is wrong.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What was expected.
        message: String,
    },
}

/// A syntax error at byte `offset` of `source`.
pub(crate) fn syntax(source: &Source, offset: usize, message: impl Into<String>) -> ParseError {
    ParseError::Syntax {
        file: source.path.display().to_string(),
        line: source.locate(offset).line,
        message: message.into(),
    }
}

/// The evenkeel config `import --from` writes: the translation with, before each part,
/// a comment naming the source line it came from, and at the top the list of what was
/// not translated and what only approximately (file:line and why).
pub fn annotated(translated: &Translated) -> String {
    let indexes: Vec<super::diagnostic::LineIndex> = translated
        .sources
        .iter()
        .map(|s| super::diagnostic::LineIndex::new(&s.text))
        .collect();
    let name = |file: usize| {
        comment(
            &translated.sources[file]
                .path
                .file_name()
                .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned()),
        )
    };
    // The first line of a statement, at most 160 characters of it.
    let clean = |text: &str| -> String {
        let line = text.lines().next().unwrap_or_default().trim();
        let mut out: String = comment(&line.chars().take(160).collect::<String>());
        if line.chars().count() > 160 {
            out.push('…');
        }
        out
    };
    let mut out = String::new();
    let mut lines = translated.text.split_inclusive('\n');
    if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for (rule, title) in [
        (
            nginx::NOT_TRANSLATED,
            "Not translated (evenkeel's config does without them):",
        ),
        (nginx::APPROXIMATE, "Translated approximately:"),
    ] {
        let notes: Vec<&(usize, Finding)> = translated
            .notes
            .iter()
            .filter(|(_, f)| f.rule == rule)
            .collect();
        if notes.is_empty() {
            continue;
        }
        out.push_str(&format!("#\n# {title}\n"));
        for (file, finding) in notes {
            let line = finding
                .span
                .as_ref()
                .map_or(0, |s| indexes[*file].locate(s.start).line);
            out.push_str(&format!(
                "#   {}:{line}: {}\n",
                name(*file),
                clean(&finding.message)
            ));
        }
    }
    let mut offset = translated
        .text
        .split_inclusive('\n')
        .next()
        .map_or(0, str::len);
    let mut last = None;
    for line in lines {
        let at = translated
            .origins
            .partition_point(|(range, _, _)| range.start <= offset)
            .checked_sub(1)
            .map(|i| &translated.origins[i])
            .filter(|(range, _, _)| offset < range.end);
        if let Some((_, file, span)) = at {
            let key = (*file, span.start);
            if last != Some(key) && line.trim() != "]" {
                let source = &translated.sources[*file];
                let number = indexes[*file].locate(span.start).line;
                let text = source.text.get(span.clone()).unwrap_or_default();
                let indent = if line.starts_with("  ") { "  " } else { "" };
                out.push_str(&format!(
                    "{indent}# {}:{number}: {}\n",
                    name(*file),
                    clean(text)
                ));
                last = Some(key);
            }
        }
        out.push_str(line);
        offset += line.len();
    }
    out
}

/// `text` made fit for a TOML comment: no line breaks or other control characters
/// (TOML refuses them in comments), each replaced by `?`.
pub(crate) fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

/// The file at `path` as another product reads it: any bytes (NGINX and HAProxy take
/// Latin-1 comments and names), those that are not UTF-8 shown as U+FFFD; at most
/// [`files::MAX_CONFIG_BYTES`].
pub(crate) fn read_source(path: &Path) -> Result<Source, files::FileError> {
    let bytes = files::read_limited_bytes(path, files::MAX_CONFIG_BYTES)?;
    Ok(Source {
        path: path.to_path_buf(),
        text: match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        },
    })
}

pub(crate) use super::values::is_route_host as routable_host;
