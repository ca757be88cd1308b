//! HAProxy's configuration syntax: one statement per line, made of words separated by
//! spaces and tabs; `#` outside quotes starts a comment (in the middle of a word too);
//! a backslash escapes a space, `#`, `\`, `'` or `"` and writes `\r`, `\n`, `\t` and
//! `\xHH`; double quotes group words and keep escapes and environment variables
//! (`$NAME`, `${NAME}`) working; single quotes keep everything as written. Quoted and
//! bare parts run together into one word (`"a b"'c'd` is the one word `a bcd`).
//! There is no line continuation. Statements belong to the section (`global`,
//! `defaults`, `frontend`, `backend`, `listen`, ...) whose keyword came last.
//! Conditional blocks (`.if` ... `.endif`, HAProxy 2.4+) are recognised and their lines
//! kept apart: evenkeel cannot know the environment they test.
//!
//! A path that is a folder reads its `*.cfg` files in byte order, as `haproxy -f DIR`
//! does. Every word keeps its byte range, so findings point at the operator's own
//! lines. Errors say file and line, as `haproxy -c` does.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::syntax;
use crate::config::diagnostic::Source;
pub use crate::config::foreign::ParseError;

/// Files read from a folder, at most.
const MAX_FILES: usize = 4096;
/// Bytes read in all, at most.
const MAX_BYTES: usize = 64 << 20;
/// Words on a line, at most (HAProxy's MAX_LINE_ARGS).
const MAX_WORDS: usize = 64;

/// The keywords that open a section.
pub const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "log-forward",
    "crt-store",
    "traces",
];

/// One word of a statement, unquoted and unescaped.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// The word as HAProxy reads it (an environment variable left as written).
    pub text: String,
    /// Where it is written.
    pub span: Range<usize>,
    /// It names an environment variable (in double quotes): its value is unknown here.
    pub env: bool,
}

/// One statement: a line's words.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Its words, the keyword first.
    pub words: Vec<Word>,
    /// The file it is in (an index into [`Parsed::sources`]).
    pub file: usize,
    /// From its first word to the end of its last.
    pub span: Range<usize>,
}

impl Line {
    /// Word `i`, or `""`.
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", |w| w.text.as_str())
    }

    /// The words from `i` on.
    pub fn rest(&self, i: usize) -> impl Iterator<Item = &str> {
        self.words.iter().skip(i).map(|w| w.text.as_str())
    }
}

/// A section: its header line (`backend app`) and its statements.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// The line that opens it; word 0 is its kind.
    pub header: Line,
    /// Its statements, in order.
    pub lines: Vec<Line>,
}

impl Section {
    /// `global`, `defaults`, `frontend`, ...
    pub fn kind(&self) -> &str {
        self.header.word(0)
    }

    /// Its name (`""` for `global` and an unnamed `defaults`).
    pub fn name(&self) -> &str {
        self.header.word(1)
    }
}

/// A configuration read whole.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The sections, in the order of the files and lines.
    pub sections: Vec<Section>,
    /// The files read, the main one first.
    pub sources: Vec<Arc<Source>>,
    /// The `.if` lines of conditional blocks, each with the statements the block holds
    /// (every branch), which are not in `sections`.
    pub conditional: Vec<(Line, usize)>,
}

/// Reads the file at `path`, or every `*.cfg` file of the folder at `path`.
pub fn read(path: &Path) -> Result<Parsed, ParseError> {
    let mut paths = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| {
            ParseError::File(crate::config::files::FileError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        })?;
        paths = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cfg") && p.is_file())
            .collect::<Vec<PathBuf>>();
        paths.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
        paths.truncate(MAX_FILES);
        if paths.is_empty() {
            return Err(ParseError::File(crate::config::files::FileError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the folder holds no *.cfg file",
                ),
            }));
        }
    } else {
        paths.push(path.to_path_buf());
    }
    let mut sources = Vec::new();
    let mut bytes = 0;
    for path in paths {
        let source = super::super::read_source(&path)?;
        bytes += source.text.len();
        if bytes > MAX_BYTES {
            return Err(syntax(
                &source,
                0,
                format!("more than {} MiB of configuration", MAX_BYTES >> 20),
            ));
        }
        sources.push(source);
    }
    parse_sources(sources)
}

/// Reads `text` as the file at `path`.
pub fn parse_text(path: &Path, text: String) -> Result<Parsed, ParseError> {
    parse_sources(vec![Source {
        path: path.to_path_buf(),
        text,
    }])
}

fn parse_sources(sources: Vec<Source>) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed {
        sections: Vec::new(),
        sources: Vec::new(),
        conditional: Vec::new(),
    };
    for source in sources {
        let file = parsed.sources.len();
        parsed.sources.push(Arc::new(source));
        let source = Arc::clone(&parsed.sources[file]);
        // The open `.if` blocks: the line of the outermost and how many lines it holds.
        let mut depth = 0usize;
        // Each file starts outside any section.
        let mut in_section = false;
        // A section opened inside a conditional block: the lines after the block
        // belong to a section evenkeel cannot know, and are held with the block.
        let mut orphaned = false;
        let mut offset = 0;
        for raw in source.text.split_inclusive('\n') {
            let start = offset;
            offset += raw.len();
            let mut words = words(&source, raw, start)?;
            if words.len() > MAX_WORDS {
                return Err(syntax(
                    &source,
                    words[MAX_WORDS].span.start,
                    format!("too many words on a line (HAProxy reads at most {MAX_WORDS})"),
                ));
            }
            // HAProxy's keywords read their arguments up to the first empty one.
            if let Some(empty) = words.iter().position(|w| w.text.is_empty()) {
                words.truncate(empty);
            }
            let Some(first) = words.first() else {
                continue;
            };
            let span = first.span.start..words.last().map_or(first.span.end, |w| w.span.end);
            let line = Line { words, file, span };
            match line.word(0) {
                ".if" => {
                    if depth == 0 {
                        parsed.conditional.push((line.clone(), 0));
                    }
                    depth += 1;
                    continue;
                }
                ".elif" | ".else" | ".endif" if depth == 0 => {
                    return Err(syntax(
                        &source,
                        line.span.start,
                        format!("'{}' without a matching '.if'", line.word(0)),
                    ));
                }
                ".endif" => {
                    depth -= 1;
                    continue;
                }
                ".elif" | ".else" => continue,
                _ if depth > 0 => {
                    if let Some((_, held)) = parsed.conditional.last_mut() {
                        *held += 1;
                    }
                    orphaned |= SECTIONS.contains(&line.word(0));
                    continue;
                }
                word if orphaned && !SECTIONS.contains(&word) => {
                    if let Some((_, held)) = parsed.conditional.last_mut() {
                        *held += 1;
                    }
                    continue;
                }
                ".diag" | ".notice" | ".warning" => continue,
                ".alert" => {
                    return Err(syntax(
                        &source,
                        line.span.start,
                        format!(".alert: {}", line.rest(1).collect::<Vec<_>>().join(" ")),
                    ));
                }
                _ => {}
            }
            if SECTIONS.contains(&line.word(0)) {
                orphaned = false;
                in_section = true;
                parsed.sections.push(Section {
                    header: line,
                    lines: Vec::new(),
                });
            } else if let Some(section) = parsed.sections.last_mut().filter(|_| in_section) {
                section.lines.push(line);
            } else {
                return Err(syntax(
                    &source,
                    line.span.start,
                    format!("unknown keyword '{}' out of section", line.word(0)),
                ));
            }
        }
        if depth > 0 {
            return Err(syntax(
                &source,
                source.text.len(),
                "missing '.endif' at the end of the file",
            ));
        }
    }
    Ok(parsed)
}

/// The words of one line (`raw`, which starts at byte `start` of the file).
fn words(source: &Source, raw: &str, start: usize) -> Result<Vec<Word>, ParseError> {
    let bytes = raw.as_bytes();
    let mut words = Vec::new();
    let mut word: Option<(Vec<u8>, usize, bool)> = None;
    let mut quote: Option<u8> = None;
    let mut quote_start = 0;
    let mut i = 0;
    let finish = |word: &mut Option<(Vec<u8>, usize, bool)>, end: usize, words: &mut Vec<Word>| {
        if let Some((text, from, env)) = word.take() {
            words.push(Word {
                text: String::from_utf8_lossy(&text).into_owned(),
                span: start + from..start + end,
                env,
            });
        }
    };
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(b'\'') => {
                if c == b'\'' {
                    quote = None;
                } else if let Some((text, _, _)) = word.as_mut() {
                    text.push(c);
                }
                i += 1;
                continue;
            }
            Some(_) if c == b'"' => {
                quote = None;
                i += 1;
                continue;
            }
            Some(_) if c == b'$' => {
                // `$NAME` or `${NAME}`: HAProxy substitutes the environment's value.
                let named = bytes
                    .get(i + 1)
                    .is_some_and(|&n| n == b'{' || n == b'_' || n.is_ascii_alphabetic());
                if let Some((text, _, env)) = word.as_mut() {
                    text.push(c);
                    *env |= named;
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        match c {
            b'\n' | b'\r' if quote.is_none() => break,
            // isspace(3) but the line ends: space, tab, vertical tab, form feed.
            b' ' | b'\t' | 0x0b | 0x0c if quote.is_none() => {
                finish(&mut word, i, &mut words);
                i += 1;
            }
            b'#' if quote.is_none() => break,
            b'"' | b'\'' if quote.is_none() => {
                word.get_or_insert_with(|| (Vec::new(), i, false));
                quote = Some(c);
                quote_start = i;
                i += 1;
            }
            b'\\' => {
                let (text, _, _) = word.get_or_insert_with(|| (Vec::new(), i, false));
                match bytes.get(i + 1) {
                    Some(&n @ (b' ' | b'#' | b'\\' | b'\'' | b'"' | b'$')) => {
                        text.push(n);
                        i += 2;
                    }
                    Some(b'r') => {
                        text.push(b'\r');
                        i += 2;
                    }
                    Some(b'n') => {
                        text.push(b'\n');
                        i += 2;
                    }
                    Some(b't') => {
                        text.push(b'\t');
                        i += 2;
                    }
                    Some(b'x') => {
                        let hex = bytes.get(i + 2..i + 4).and_then(|h| {
                            std::str::from_utf8(h)
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        });
                        let Some(value) = hex else {
                            return Err(syntax(
                                source,
                                start + i,
                                "truncated or invalid hexadecimal sequence",
                            ));
                        };
                        text.push(value);
                        i += 4;
                    }
                    // Any other backslash stays as written (a regex's `\.` is one).
                    _ => {
                        text.push(b'\\');
                        i += 1;
                    }
                }
            }
            _ => {
                let (text, _, _) = word.get_or_insert_with(|| (Vec::new(), i, false));
                text.push(c);
                i += 1;
            }
        }
    }
    if quote.is_some() {
        return Err(syntax(source, start + quote_start, "unmatched quote"));
    }
    finish(&mut word, i, &mut words);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Parsed, ParseError> {
        parse_text(Path::new("/nonexistent/haproxy.cfg"), text.to_string())
    }

    fn words_of(text: &str) -> Vec<String> {
        let parsed = parse(&format!("backend b\n{text}\n")).expect("parses");
        parsed.sections[0].lines[0]
            .words
            .iter()
            .map(|w| w.text.clone())
            .collect()
    }

    #[test]
    fn words_quotes_escapes_and_comments_as_haproxy_reads_them() {
        assert_eq!(
            words_of("server s1 127.0.0.1:80 check # a comment"),
            ["server", "s1", "127.0.0.1:80", "check"]
        );
        assert_eq!(words_of("a b#c d"), ["a", "b"]);
        assert_eq!(words_of(r#"a "b c"'d e'f"#), ["a", "b cd ef"]);
        assert_eq!(
            words_of(r"a b\ c \#d \\ \x41"),
            ["a", "b c", "#d", "\\", "A"]
        );
        assert_eq!(
            words_of(r#"a "x # y" 'p \" q'"#),
            ["a", "x # y", r#"p \" q"#]
        );
        assert_eq!(words_of(r"a \. z"), ["a", r"\.", "z"]);
        assert_eq!(
            words_of("a \"\" b"),
            ["a"],
            "HAProxy stops at an empty word"
        );
        assert_eq!(words_of("a\x0cb\x0bc"), ["a", "b", "c"]);
        assert_eq!(words_of("\ta\tb  \r"), ["a", "b"]);
    }

    #[test]
    fn environment_variables_in_double_quotes_are_marked() {
        let parsed = parse("backend b\nserver s \"${HOST}:80\" '$X' \"$5\"\n").expect("parses");
        let line = &parsed.sections[0].lines[0];
        assert!(line.words[2].env);
        assert!(!line.words[3].env, "single quotes: no substitution");
        assert!(!line.words[4].env, "$5 is no variable name");
    }

    #[test]
    fn sections_gather_their_lines_and_spans_point_at_the_words() {
        let text =
            "global\n  daemon\n\ndefaults\n  mode http\nbackend app\n  server a 10.0.0.1:80\n";
        let parsed = parse(text).expect("parses");
        let kinds: Vec<_> = parsed.sections.iter().map(|s| s.kind()).collect();
        assert_eq!(kinds, ["global", "defaults", "backend"]);
        assert_eq!(parsed.sections[2].name(), "app");
        let server = &parsed.sections[2].lines[0];
        assert_eq!(&text[server.span.clone()], "server a 10.0.0.1:80");
        assert_eq!(&text[server.words[2].span.clone()], "10.0.0.1:80");
    }

    #[test]
    fn conditional_blocks_are_kept_apart_and_errors_name_the_line() {
        let parsed = parse(
            "backend b\n.if defined(X)\n server a 1.2.3.4:80\n.else\n server c 1.2.3.5:80\n.endif\n server d 1.2.3.6:80\n",
        )
        .expect("parses");
        assert_eq!(parsed.sections[0].lines.len(), 1);
        assert_eq!(parsed.conditional.len(), 1);
        assert_eq!(parsed.conditional[0].1, 2);
        for (text, line) in [
            ("backend b\n server a \"1.2.3.4:80\n", 2),
            ("mode http\n", 1),
            ("backend b\n.endif\n", 2),
            ("backend b\n.if x\n", 3),
            ("backend b\n  server a \\x4\n", 2),
        ] {
            match parse(text) {
                Err(ParseError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
