//! The one way evenkeel reads a file that a config or the command line names: the
//! config file itself (`check`, `serve`, SIGHUP, `apply`, `plan`, `simulate`,
//! `preflight`), the admin token file, a load-test body.
//!
//! A name in a config is input, and input can point anywhere: at a FIFO (opening it
//! blocks until a writer comes, which hung `check`, SIGHUP and the admin API), at
//! `/dev/zero` (reading it never ends: `check` grew to 1 GB), at a directory or a huge
//! log (issue 12, defect 7). So a file is read only when it is a **regular file** after
//! following symlinks, checked on its metadata *before* it is opened — a FIFO is never
//! opened — and again on the open handle; and at most [`MAX_FILE_BYTES`] are read, through
//! `take`, so a file that grows or is swapped between the check and the read cannot blow
//! the cap (16 MiB for a config file itself, [`read_config`]). Every failure is a [`FileError`] naming the path and the reason.

use std::fs::{File, FileType};
use std::io::{self, Read as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

/// Largest file a config names that [`read_limited`] reads (a token file): 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Largest config file [`read_config`] reads: 16 MiB (a 100,000-backend config is
/// about 4.5 MB, and `check` takes half a second over it).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Why a named file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It is not a regular file: a FIFO, a device, a directory, a socket.
    #[error("cannot read {}: it is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file as named.
        path: PathBuf,
        /// What it is instead, in words ("a FIFO (named pipe)").
        kind: &'static str,
    },
    /// It holds more than the cap.
    #[error("cannot read {}: it is larger than {} ({limit} bytes)", path.display(), bytes_in_words(*limit))]
    TooLarge {
        /// The file as named.
        path: PathBuf,
        /// The cap, in bytes.
        limit: u64,
    },
    /// It is not UTF-8 text.
    #[error("cannot read {}: it is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file as named.
        path: PathBuf,
    },
    /// The operating system refused (missing, no permission, ...).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file as named.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl FileError {
    /// The reason alone, without the path ("it is a FIFO (named pipe), not a regular
    /// file"), for messages that name the file their own way.
    pub fn reason(&self) -> String {
        match self {
            FileError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
            FileError::TooLarge { limit, .. } => {
                format!("it is larger than {}", bytes_in_words(*limit))
            }
            FileError::NotUtf8 { .. } => "it is not UTF-8 text".to_string(),
            FileError::Io { source, .. } => source.to_string(),
        }
    }

    /// Whether the file is simply absent (which a deploy may still fix), rather than
    /// present but unfit.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

fn bytes_in_words(bytes: u64) -> String {
    if bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

/// What a file that is not regular is, in words.
fn kind_of(file_type: FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Checks, from its metadata alone (following symlinks, never opening it), that `path`
/// is a regular file of at most `limit` bytes.
pub fn inspect(path: &Path, limit: u64) -> Result<(), FileError> {
    let metadata = std::fs::metadata(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(kind) = kind_of(metadata.file_type()) {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    if metadata.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(())
}

/// The bytes of the regular file at `path`, at most `limit` of them (more is an error).
pub fn read_limited_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    // Before opening: opening a FIFO blocks until a writer comes.
    inspect(path, limit)?;
    let io_error = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    // The path may have been swapped since: judge what was opened too.
    if let Some(kind) = kind_of(file.metadata().map_err(io_error)?.file_type()) {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// The text of the regular file at `path`: at most [`MAX_FILE_BYTES`], UTF-8.
pub fn read_limited(path: &Path) -> Result<String, FileError> {
    read_text(path, MAX_FILE_BYTES)
}

/// The admin token in the file at `path`, trimmed; the reason it cannot be used
/// otherwise (unreadable, or under [`super::model::MIN_ADMIN_TOKEN_LEN`] characters).
/// The one judgement of a token file: `serve` refuses to start on what it refuses,
/// and `check` (lint `admin-token-missing`) reports the same as an error.
pub fn read_admin_token(path: &Path) -> Result<String, String> {
    let text = read_limited(path).map_err(|e| e.reason())?;
    let token = text.trim();
    let len = token.chars().count();
    if len < super::model::MIN_ADMIN_TOKEN_LEN {
        return Err(format!(
            "it holds {len} characters, fewer than the {} the admin API needs",
            super::model::MIN_ADMIN_TOKEN_LEN
        ));
    }
    Ok(token.to_string())
}

/// The text of the config file at `path`: a regular file of at most
/// [`MAX_CONFIG_BYTES`], UTF-8.
pub fn read_config(path: &Path) -> Result<String, FileError> {
    read_text(path, MAX_CONFIG_BYTES)
}

fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read_limited_bytes(path, limit)?;
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_and_anything_else_is_refused_with_its_kind() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef\n").expect("write");
        assert_eq!(read_limited(&token).expect("read"), "0123456789abcdef\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&token, &link).expect("symlink");
        assert!(read_limited(&link).is_ok(), "a symlink to a file is read");

        let refused = read_limited(dir.path()).expect_err("a directory");
        assert!(
            refused.to_string().contains("it is a directory"),
            "{refused}"
        );
        let zero = read_limited(Path::new("/dev/zero")).expect_err("a device");
        assert!(
            zero.to_string()
                .ends_with("/dev/zero: it is a character device, not a regular file"),
            "{zero}"
        );
        let missing = read_limited(&dir.path().join("absent")).expect_err("missing");
        assert!(missing.is_not_found(), "{missing}");
    }

    #[test]
    fn a_file_over_the_cap_or_not_utf8_is_refused() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).expect("write");
        let error = read_limited(&big).expect_err("over the cap");
        assert!(matches!(error, FileError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
        let exact = dir.path().join("exact");
        std::fs::write(&exact, vec![b'#'; MAX_FILE_BYTES as usize]).expect("write");
        assert!(read_limited(&exact).is_ok());
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        assert!(matches!(
            read_limited(&binary),
            Err(FileError::NotUtf8 { .. })
        ));
        assert!(matches!(
            read_limited_bytes(&binary, 2),
            Err(FileError::TooLarge { .. })
        ));
    }
}
