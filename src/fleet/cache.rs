//! The last fleet version a node served, kept in its `state_dir` (`fleet-version.json`)
//! so that a node restarted while etcd is unreachable serves it rather than its own
//! file (fail static: DESIGN "Growing past one machine").

use std::path::Path;

use crate::store::Version;

/// The file name under `state_dir`.
pub const FILE: &str = "fleet-version.json";

/// Keeps `version` (written to a temporary file, then renamed over the old one, so a
/// crash never leaves half a file).
pub fn write(state_dir: &Path, version: &Version) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let json = serde_json::to_vec_pretty(version).map_err(std::io::Error::other)?;
    let mut file = tempfile::NamedTempFile::new_in(state_dir)?;
    std::io::Write::write_all(&mut file, &json)?;
    file.as_file().sync_all()?;
    file.persist(state_dir.join(FILE))
        .map_err(|e| e.error)
        .map(drop)
}

/// The version kept in `state_dir`, if there is one that can be read.
pub fn read(state_dir: &Path) -> Option<Version> {
    let path = state_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the kept fleet version");
            return None;
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| tracing::warn!(file = %path.display(), error = %e, "the kept fleet version is unreadable; ignoring it"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Origin, Outcome};

    #[test]
    fn a_kept_version_reads_back_and_a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let state = dir.path().join("state");
        assert_eq!(read(&state), None);
        let version = Version {
            id: 7,
            time: "2026-12-01T00:00:00Z".into(),
            origin: Origin::Api,
            sha256: "ab".into(),
            text: "[[listener]]\n".into(),
            certificates: Vec::new(),
            outcome: Outcome::Applied,
            detail: String::new(),
            restores: None,
            node: Some("a".into()),
            expect_shift: true,
        };
        write(&state, &version).expect("write");
        assert_eq!(read(&state), Some(version));
        std::fs::write(state.join(FILE), b"{\"id\": 7, \"te").expect("write");
        assert_eq!(read(&state), None);
    }
}
