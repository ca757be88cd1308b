//! A command's standard output. `println!` panics when the reader has gone away
//! (`evenkeel check -c lb.toml | head -3`: "failed printing to stdout: Broken pipe",
//! exit status 101). Commands print through `outln!` and `out!` instead: a reader
//! that stops early ends the command as it ends a C tool killed by SIGPIPE — quietly,
//! with status 141 (128 + 13), so `set -o pipefail` scripts can tell. Any other failure
//! to write (a full disk behind a redirect) is an error on stderr and exit status 3.

use std::fmt;
use std::io::{self, Write};

/// The status of a command whose output reader went away: what a shell reports for
/// a process killed by SIGPIPE.
pub const BROKEN_PIPE_STATUS: i32 = 128 + 13;

/// Prints to standard output, as `print!` does (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(::std::format_args!($($arg)*), false)
    };
}

/// Prints a line to standard output, as `println!` does (see the module docs).
macro_rules! outln {
    () => {
        $crate::cli::out::write(::std::format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(::std::format_args!($($arg)*), true)
    };
}

/// Writes `text` (and a newline when `line`) to standard output; a broken pipe or a
/// failed write ends the process (see the module docs).
pub fn write(text: fmt::Arguments<'_>, line: bool) {
    let mut stdout = io::stdout().lock();
    let mut written = stdout.write_fmt(text);
    if line && written.is_ok() {
        written = stdout.write_all(b"\n");
    }
    if let Err(e) = written {
        fail(&e);
    }
}

/// Writes `bytes` whole to standard output; a broken pipe or a failed write ends the
/// process (see the module docs).
pub fn write_bytes(bytes: &[u8]) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        fail(&e);
    }
}

/// Ends the process after a failed write to standard output.
fn fail(error: &io::Error) -> ! {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_STATUS);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(super::Exit::Runtime as i32);
}
