//! Helpers shared by the integration tests: temporary config files and running the
//! `evenkeel` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary folder that holds config files; removed when dropped.
pub struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    /// Writes `text` to `name` in the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What a finished `evenkeel` process printed and how it exited.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The `evenkeel` binary built for these tests.
pub fn evenkeel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_evenkeel"))
}

/// Runs `evenkeel ARGS` to completion.
pub fn run(args: &[&str]) -> Run {
    evenkeel().args(args).output().expect("run evenkeel").into()
}
