//! NGINX's configuration syntax: directives (`name arg ...;`) and blocks
//! (`name arg ... { ... }`), `#` comments to the end of the line, single- and
//! double-quoted arguments with backslash escapes, `${var}` inside words, and `include`
//! with globs, resolved against NGINX's configuration prefix (the folder of the main
//! file) as `nginx -c FILE` does.
//!
//! Every directive keeps the file and byte range it was written at, so findings point
//! at the operator's own lines. Errors say file, line and what was expected, as
//! `nginx -t` does.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::diagnostic::Source;

/// Files read through `include`, at most (one file included many times counts each
/// time: Debian's `include proxy_params;` in every location).
const MAX_FILES: usize = 4096;
/// Bytes read in all, at most.
const MAX_BYTES: usize = 64 << 20;
/// Blocks nested deeper than this are refused (a hostile file must not exhaust the
/// stack).
const MAX_DEPTH: usize = 64;

/// One directive, with its block when it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Directive {
    /// Its name (`upstream`, `server`, ...).
    pub name: String,
    /// Its arguments, unquoted, each with its span.
    pub args: Vec<(String, Range<usize>)>,
    /// Its block (`{ ... }`), if it has one.
    pub block: Option<Vec<Directive>>,
    /// The file it is in (an index into [`Parsed::sources`]).
    pub file: usize,
    /// From its name to its `;` or `{`.
    pub span: Range<usize>,
}

impl Directive {
    /// Argument `i`, or `""`.
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map_or("", |(a, _)| a.as_str())
    }
}

/// A configuration read whole: its directives (includes spliced in) and every file.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The top-level directives.
    pub directives: Vec<Directive>,
    /// The files read, the main one first.
    pub sources: Vec<Arc<Source>>,
}

pub use crate::config::foreign::ParseError;

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Reads `text` as the file at `path`, and every file it includes (against the folder
/// of `path`).
pub fn parse_text(path: &Path, text: String) -> Result<Parsed, ParseError> {
    let mut parser = Parser {
        prefix: crate::config::folder_of(path),
        sources: Vec::new(),
        reading: Vec::new(),
        bytes: 0,
    };
    let source = Source {
        path: path.to_path_buf(),
        text,
    };
    let directives = parser.file(source, 0)?;
    Ok(Parsed {
        directives,
        sources: parser.sources,
    })
}

/// Reads `path` and every file it includes.
pub fn read(path: &Path) -> Result<Parsed, ParseError> {
    let prefix = crate::config::folder_of(path);
    let mut parser = Parser {
        prefix,
        sources: Vec::new(),
        reading: Vec::new(),
        bytes: 0,
    };
    let directives = parser.file(super::super::read_source(path)?, 0)?;
    Ok(Parsed {
        directives,
        sources: parser.sources,
    })
}

struct Parser {
    prefix: PathBuf,
    sources: Vec<Arc<Source>>,
    /// The files being read, outermost first (an include of one of them is a loop).
    reading: Vec<PathBuf>,
    /// Bytes read so far.
    bytes: usize,
}

impl Parser {
    fn file(&mut self, source: Source, depth: usize) -> Result<Vec<Directive>, ParseError> {
        let path = source.path.clone();
        self.bytes += source.text.len();
        let file = self.sources.len();
        self.sources.push(Arc::new(source));
        let source = Arc::clone(&self.sources[file]);
        let tokens = tokenize(&source, file)?;
        let mut at = 0;
        self.reading
            .push(std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()));
        let directives = self.block(&source, file, &tokens, &mut at, depth, false);
        self.reading.pop();
        directives
    }

    fn syntax(source: &Source, offset: usize, message: impl Into<String>) -> ParseError {
        super::super::syntax(source, offset, message)
    }

    fn block(
        &mut self,
        source: &Source,
        file: usize,
        tokens: &[(Token, Range<usize>)],
        at: &mut usize,
        depth: usize,
        nested: bool,
    ) -> Result<Vec<Directive>, ParseError> {
        if depth > MAX_DEPTH {
            let offset = tokens.get(*at).map_or(source.text.len(), |t| t.1.start);
            return Err(Self::syntax(source, offset, "blocks nested too deep"));
        }
        let mut directives = Vec::new();
        loop {
            let Some((token, span)) = tokens.get(*at) else {
                if nested {
                    return Err(Self::syntax(
                        source,
                        source.text.len(),
                        "unexpected end of file, expecting \"}\"",
                    ));
                }
                return Ok(directives);
            };
            let (name, start) = match token {
                Token::Close if nested => {
                    *at += 1;
                    return Ok(directives);
                }
                Token::Word(name) => (name.clone(), span.start),
                other => {
                    return Err(Self::syntax(
                        source,
                        span.start,
                        format!("unexpected {}", describe(other)),
                    ));
                }
            };
            *at += 1;
            let mut args = Vec::new();
            loop {
                match tokens.get(*at) {
                    Some((Token::Word(word), span)) => {
                        args.push((word.clone(), span.clone()));
                        *at += 1;
                    }
                    Some((Token::Semicolon, span)) => {
                        let end = span.end;
                        *at += 1;
                        let directive = Directive {
                            name,
                            args,
                            block: None,
                            file,
                            span: start..end,
                        };
                        if directive.name == "include" {
                            directives.extend(self.include(source, &directive, depth)?);
                        } else {
                            directives.push(directive);
                        }
                        break;
                    }
                    Some((Token::Open, span)) => {
                        let end = span.end;
                        *at += 1;
                        let block = self.block(source, file, tokens, at, depth + 1, true)?;
                        directives.push(Directive {
                            name,
                            args,
                            block: Some(block),
                            file,
                            span: start..end,
                        });
                        break;
                    }
                    Some((Token::Close, span)) => {
                        return Err(Self::syntax(
                            source,
                            span.start,
                            format!("unexpected \"}}\" after \"{name}\", expecting \";\""),
                        ));
                    }
                    None => {
                        return Err(Self::syntax(source, source.text.len(), format!("unexpected end of file after \"{name}\", expecting \";\" or \"{{\"")));
                    }
                }
            }
        }
    }

    /// The directives of the files `include` names (a glob, relative to the prefix).
    fn include(
        &mut self,
        source: &Source,
        directive: &Directive,
        depth: usize,
    ) -> Result<Vec<Directive>, ParseError> {
        if directive.args.len() != 1 {
            return Err(Self::syntax(
                source,
                directive.span.start,
                "\"include\" takes one file or glob",
            ));
        }
        let pattern = directive.arg(0);
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.prefix.join(pattern)
        };
        // As glob(3), which NGINX uses: `**` is `*` (no recursion), and a leading dot
        // is matched only by a dot.
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let pattern_text = full.to_string_lossy().replace("**", "*");
        let mut paths: Vec<PathBuf> = match glob::glob_with(&pattern_text, options) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect(),
            Err(e) => {
                return Err(Self::syntax(
                    source,
                    directive.span.start,
                    format!("bad include pattern {pattern:?}: {e}"),
                ));
            }
        };
        // In byte order, as glob(3) sorts (the order decides NGINX's default server).
        paths.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
        // Like NGINX: a pattern matching nothing is fine, a plain path that is not
        // there is an error.
        if paths.is_empty() && !pattern.contains(['*', '?', '[']) {
            return Err(Self::syntax(
                source,
                directive.span.start,
                format!("cannot open the included file {}", full.display()),
            ));
        }
        let mut directives = Vec::new();
        for path in paths {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if self.reading.contains(&canonical) {
                return Err(Self::syntax(
                    source,
                    directive.span.start,
                    format!("{} includes itself (an include loop)", path.display()),
                ));
            }
            if self.sources.len() >= MAX_FILES || self.bytes >= MAX_BYTES {
                return Err(Self::syntax(
                    source,
                    directive.span.start,
                    format!(
                        "more than {MAX_FILES} files or {} MiB included",
                        MAX_BYTES >> 20
                    ),
                ));
            }
            directives.extend(self.file(super::super::read_source(&path)?, depth + 1)?);
        }
        Ok(directives)
    }
}

fn describe(token: &Token) -> &'static str {
    match token {
        Token::Word(_) => "word",
        Token::Semicolon => "\";\"",
        Token::Open => "\"{\"",
        Token::Close => "\"}\"",
    }
}

/// Appends to `word` what a backslash followed by `next` stands for, as NGINX reads it
/// (quoted or not): `\"` `\'` `\\` and `\n` `\r` `\t` are escapes; any other
/// backslash stays (a regex's `\.` is one).
fn unescape(next: u8, word: &mut Vec<u8>) {
    match next {
        b'"' | b'\'' | b'\\' => word.push(next),
        b'n' => word.push(b'\n'),
        b'r' => word.push(b'\r'),
        b't' => word.push(b'\t'),
        other => word.extend([b'\\', other]),
    }
}

/// The tokens of `source`, each with its byte range.
fn tokenize(source: &Source, _file: usize) -> Result<Vec<(Token, Range<usize>)>, ParseError> {
    let text = source.text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b';' => {
                tokens.push((Token::Semicolon, i..i + 1));
                i += 1;
            }
            b'{' => {
                tokens.push((Token::Open, i..i + 1));
                i += 1;
            }
            b'}' => {
                tokens.push((Token::Close, i..i + 1));
                i += 1;
            }
            b'"' | b'\'' => {
                let start = i;
                i += 1;
                let mut word = Vec::new();
                loop {
                    match text.get(i) {
                        None => {
                            return Err(Parser::syntax(
                                source,
                                start,
                                "unterminated quoted string",
                            ));
                        }
                        Some(&b'\\') if i + 1 < text.len() => {
                            // NGINX keeps the backslash except before the quote, a
                            // backslash, and the escapes \n, \r, \t.
                            unescape(text[i + 1], &mut word);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&b) => {
                            word.push(b);
                            i += 1;
                        }
                    }
                }
                tokens.push((
                    Token::Word(String::from_utf8_lossy(&word).into_owned()),
                    start..i,
                ));
            }
            _ => {
                let start = i;
                let mut word = Vec::new();
                while i < text.len() {
                    let b = text[i];
                    match b {
                        // NGINX ends a word at whitespace, `;` and `{` (a `}` inside a
                        // word is part of it).
                        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' => {
                            // `${var}` inside a word.
                            if b == b'{' && word.last() == Some(&b'$') {
                                while i < text.len() && text[i] != b'}' {
                                    word.push(text[i]);
                                    i += 1;
                                }
                                if i < text.len() {
                                    word.push(b'}');
                                    i += 1;
                                }
                                continue;
                            }
                            break;
                        }
                        // As in quotes: \" \' \\ and \n \r \t are escapes; any
                        // other backslash stays (a regex's `\.` is one).
                        b'\\' if i + 1 < text.len() => {
                            unescape(text[i + 1], &mut word);
                            i += 2;
                        }
                        _ => {
                            word.push(b);
                            i += 1;
                        }
                    }
                }
                tokens.push((
                    Token::Word(String::from_utf8_lossy(&word).into_owned()),
                    start..i,
                ));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes each (path under `dir`, text), making folders as needed.
    fn write_files(dir: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = dir.join(path);
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder).expect("mkdir");
            }
            std::fs::write(path, text).expect("write");
        }
    }

    fn parse(text: &str) -> Result<Vec<Directive>, ParseError> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        read(&path).map(|p| p.directives)
    }

    #[test]
    fn directives_blocks_comments_and_quotes() {
        let d = parse("# top\nhttp {\n  upstream web { server 10.0.0.1:80 weight=2; } # end\n  log_format x '$a \"q\" \\'s\\'';\n}\n").expect("parses");
        assert_eq!(d.len(), 1);
        let http = d[0].block.as_ref().expect("a block");
        assert_eq!(http[0].name, "upstream");
        assert_eq!(http[0].arg(0), "web");
        let server = &http[0].block.as_ref().expect("block")[0];
        assert_eq!(
            (server.name.as_str(), server.arg(0), server.arg(1)),
            ("server", "10.0.0.1:80", "weight=2")
        );
        assert_eq!(http[1].arg(1), "$a \"q\" 's'");
    }

    #[test]
    fn variables_in_braces_stay_in_the_word() {
        let d = parse("set $x ${host}_a;\n").expect("parses");
        assert_eq!(d[0].arg(1), "${host}_a");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line) in [
            ("http {\n server {\n", 3),
            ("a b\n}", 2),
            ("a 'b;\n", 1),
            ("}\n", 1),
        ] {
            match parse(text) {
                Err(ParseError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn includes_resolve_globs_against_the_prefix_and_stop_on_loops() {
        let dir = tempfile::tempdir().expect("temporary folder");
        write_files(
            dir.path(),
            &[
                ("conf.d/b.conf", "upstream b { server 10.0.0.2; }\n"),
                ("conf.d/a.conf", "upstream a { server 10.0.0.1; }\n"),
                (
                    "nginx.conf",
                    "http { include conf.d/*.conf; include nothing/*.conf; }\n",
                ),
            ],
        );
        let parsed = read(&dir.path().join("nginx.conf")).expect("parses");
        let http = parsed.directives[0].block.as_ref().expect("block");
        let names: Vec<&str> = http.iter().map(|d| d.arg(0)).collect();
        assert_eq!(names, ["a", "b"], "sorted, as NGINX reads them");
        assert_eq!(parsed.sources.len(), 3);
        assert_eq!(http[1].file, 2);
        std::fs::write(dir.path().join("loop.conf"), "include loop.conf;\n").expect("write");
        assert!(matches!(
            read(&dir.path().join("loop.conf")),
            Err(ParseError::Syntax { .. })
        ));
        std::fs::write(dir.path().join("missing.conf"), "include nope.conf;\n").expect("write");
        assert!(read(&dir.path().join("missing.conf")).is_err());
    }

    #[test]
    fn words_end_where_nginx_ends_them_and_escape_as_nginx_does() {
        let d = parse("return 200 a}b;\nset $x a\\\"b\\\\c;\nlocation ~ \\.php$ { }\n")
            .expect("parses");
        assert_eq!(
            d[0].arg(1),
            "a}b",
            "a closing brace inside a word is part of it"
        );
        assert_eq!(d[1].arg(1), "a\"b\\c");
        assert_eq!(d[2].arg(1), "\\.php$", "a regex keeps its backslash");
    }

    #[test]
    fn an_included_file_includes_against_the_prefix_and_a_loop_is_named() {
        let dir = tempfile::tempdir().expect("temporary folder");
        write_files(
            dir.path(),
            &[
                ("snippets/proxy.conf", "proxy_connect_timeout 2s;\n"),
                // Relative to the prefix (the main file's folder), not to sites/.
                ("sites/a.conf", "server { include snippets/proxy.conf; }\n"),
                ("sites/.a.conf.swp", "not nginx at all {"),
                ("nginx.conf", "http { include sites/*; }\n"),
            ],
        );
        let parsed =
            read(&dir.path().join("nginx.conf")).expect("parses (a hidden file is not matched)");
        let server = &parsed.directives[0].block.as_ref().expect("http")[0];
        assert_eq!(
            server.block.as_ref().expect("server")[0].name,
            "proxy_connect_timeout"
        );
        std::fs::write(
            dir.path().join("snippets/proxy.conf"),
            "include sites/a.conf;\n",
        )
        .expect("write");
        match read(&dir.path().join("nginx.conf")) {
            Err(ParseError::Syntax { message, .. }) => {
                assert!(message.contains("includes itself"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "a {".repeat(10_000);
        assert!(matches!(parse(&text), Err(ParseError::Syntax { .. })));
    }
}
