//! The config history in a SQLite file (`state_dir/evenkeel.db`), through rusqlite's
//! bundled SQLite. One connection behind a mutex: writes happen at applies, a few a
//! minute at most, never on the request path. WAL mode keeps a reader (the admin API's
//! history) from waiting on a writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    sha256, JournalEntry, NewVersion, Origin, Outcome, Rejection, Store, StoreError, Version,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    origin   TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    text     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL,
    restores INTEGER
);
CREATE TABLE IF NOT EXISTS journal (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    version  INTEGER,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_time ON journal (time);
CREATE TABLE IF NOT EXISTS rejected (
    sha256   TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    time     TEXT NOT NULL
);
";

/// The config history in SQLite.
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `state_dir/evenkeel.db`.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Folder {
            path: state_dir.display().to_string(),
            source,
        })?;
        let path = state_dir.join("evenkeel.db");
        let error = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let connection = Connection::open(&path).map_err(error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        connection.execute_batch(SCHEMA).map_err(error)?;
        // Histories from before TLS lack the certificates column.
        let has_certificates = connection
            .prepare("SELECT 1 FROM pragma_table_info('versions') WHERE name = 'certificates'")
            .and_then(|mut s| s.exists([]))
            .map_err(error)?;
        if !has_certificates {
            connection
                .execute_batch(
                    "ALTER TABLE versions ADD COLUMN certificates TEXT NOT NULL DEFAULT '[]'",
                )
                .map_err(error)?;
        }
        Ok(SqliteStore {
            path,
            connection: Mutex::new(connection),
        })
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Version> {
    Ok(Version {
        id: row.get::<_, i64>(0)? as u64,
        time: row.get(1)?,
        origin: Origin::parse(&row.get::<_, String>(2)?),
        sha256: row.get(3)?,
        text: row.get(4)?,
        outcome: Outcome::parse(&row.get::<_, String>(5)?),
        detail: row.get(6)?,
        restores: row.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        node: None,
        expect_shift: false,
        certificates: serde_json::from_str(&row.get::<_, String>(8)?).unwrap_or_default(),
    })
}

const COLUMNS: &str = "id, time, origin, sha256, text, outcome, detail, restores, certificates";

impl Store for SqliteStore {
    fn record(&self, version: NewVersion<'_>) -> Result<Version, StoreError> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let sha = version
            .identity
            .map_or_else(|| sha256(version.text), str::to_string);
        let certificates = serde_json::to_string(version.certificates).unwrap_or_default();
        let connection = self.connection();
        connection
            .execute(
                "INSERT INTO versions (time, origin, sha256, text, outcome, detail, restores, certificates)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    time,
                    version.origin.as_str(),
                    sha,
                    version.text,
                    version.outcome.as_str(),
                    version.detail,
                    version.restores.map(|v| v as i64),
                    certificates,
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(Version {
            id: connection.last_insert_rowid() as u64,
            time,
            origin: version.origin,
            sha256: sha,
            text: version.text.to_string(),
            outcome: version.outcome,
            detail: version.detail.to_string(),
            restores: version.restores,
            node: None,
            // Not kept by one node's history: only other nodes of a fleet need it.
            expect_shift: false,
            certificates: version.certificates.to_vec(),
        })
    }

    fn versions(&self) -> Result<Vec<Version>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(&format!("SELECT {COLUMNS} FROM versions ORDER BY id"))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], from_row)
            .map_err(|e| self.error(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.error(e))
    }

    fn journal(
        &self,
        version: Option<u64>,
        event: &crate::health::Event,
    ) -> Result<u64, StoreError> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let data = serde_json::to_value(event).unwrap_or_default();
        let kind = data["kind"].as_str().unwrap_or("event").to_string();
        let connection = self.connection();
        connection
            .execute(
                "INSERT INTO journal (time, version, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![time, version.map(|v| v as i64), kind, event.to_string(), data.to_string()],
            )
            .map_err(|e| self.error(e))?;
        Ok(connection.last_insert_rowid() as u64)
    }

    fn journal_entries(
        &self,
        after: u64,
        since: Option<&str>,
        until: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT id, time, version, kind, message, data FROM journal
                 WHERE id > ?1 AND (?2 IS NULL OR time >= ?2) AND (?3 IS NULL OR time <= ?3)
                 ORDER BY id LIMIT ?4",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![after as i64, since, until, limit as i64], |row| {
                let data: String = row.get(5)?;
                Ok(JournalEntry {
                    id: row.get::<_, i64>(0)? as u64,
                    time: row.get(1)?,
                    version: row.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    kind: row.get(3)?,
                    message: row.get(4)?,
                    data: serde_json::from_str(&data).unwrap_or_default(),
                    node: None,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.error(e))
    }

    fn reject(&self, sha256: &str, version: u64, reason: &str) -> Result<(), StoreError> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        self.connection()
            .execute(
                "INSERT OR REPLACE INTO rejected (sha256, version, reason, time) VALUES (?1, ?2, ?3, ?4)",
                params![sha256, version as i64, reason, time],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn rejection(&self, sha256: &str) -> Result<Option<Rejection>, StoreError> {
        self.connection()
            .query_row(
                "SELECT version, reason, time FROM rejected WHERE sha256 = ?1",
                [sha256],
                |row| {
                    Ok(Rejection {
                        version: row.get::<_, i64>(0)? as u64,
                        reason: row.get(1)?,
                        time: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn version(&self, id: u64) -> Result<Option<Version>, StoreError> {
        self.connection()
            .query_row(
                &format!("SELECT {COLUMNS} FROM versions WHERE id = ?1"),
                [id as i64],
                from_row,
            )
            .optional()
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_from_one_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state")).unwrap();
        let first = store
            .record(NewVersion {
                origin: Origin::Start,
                text: "a = 1\n",
                outcome: Outcome::Applied,
                detail: "",
                restores: None,
                identity: None,
                certificates: &[],
                seen: None,
                expect_shift: false,
            })
            .unwrap();
        assert_eq!(first.id, 1);
        let second = store
            .record(NewVersion {
                origin: Origin::Api,
                text: "bad",
                outcome: Outcome::Refused,
                detail: "error[x]",
                restores: None,
                identity: None,
                certificates: &[],
                seen: None,
                expect_shift: false,
            })
            .unwrap();
        assert_eq!(second.id, 2);
        drop(store);
        let store = SqliteStore::open(&dir.path().join("state")).unwrap();
        let versions = store.versions().unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].text, "a = 1\n");
        assert_eq!(versions[1].outcome, Outcome::Refused);
        assert_eq!(versions[1].detail, "error[x]");
        assert_eq!(
            store.version(1).unwrap().map(|v| v.sha256),
            Some(sha256("a = 1\n"))
        );
        assert_eq!(store.version(9).unwrap(), None);
    }

    #[test]
    fn an_unwritable_state_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            SqliteStore::open(&file.join("state")),
            Err(StoreError::Folder { .. })
        ));
    }
}
