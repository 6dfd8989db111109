//! The function registry: which functions are deployed, with what settings
//! and where their snapshots are, in an embedded SQLite database next to
//! the snapshots. It is what a restarted daemon (even after `kill -9`)
//! brings its functions back from.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::api::{FunctionConfig, FunctionImage};

/// One deployed function as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The function's name.
    pub name: String,
    /// Deployment counter.
    pub version: u64,
    /// Its settings.
    pub config: FunctionConfig,
    /// SHA-256 of the module (hex); the bytes are in the module store.
    pub module_sha256: String,
    /// The image it was deployed from (pinned in the image store).
    pub image: Option<FunctionImage>,
    /// Directory of this version's snapshot.
    pub snapshot_dir: PathBuf,
    /// When this version became ready (Unix seconds).
    pub deployed_at: u64,
}

/// Registry failures.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed.
    #[error("registry database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("registry row for `{name}` is unreadable: {message}")]
    Corrupt {
        /// The function.
        name: String,
        /// What was wrong.
        message: String,
    },
}

/// The registry database.
pub struct Registry {
    db: Connection,
}

impl Registry {
    /// Opens (creating if needed) the registry at `path`.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let db = Connection::open(path)?;
        // WAL + synchronous=FULL: a committed deploy survives kill -9 and
        // power loss; readers never block the writer.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS functions (
                name          TEXT PRIMARY KEY,
                version       INTEGER NOT NULL,
                config        TEXT NOT NULL,
                module_sha256 TEXT NOT NULL,
                snapshot_dir  TEXT NOT NULL,
                deployed_at   INTEGER NOT NULL
            )",
        )?;
        // Added with images; older databases gain the columns.
        let columns: Vec<String> = db
            .prepare("SELECT name FROM pragma_table_info('functions')")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for column in ["image_ref", "image_digest"] {
            if !columns.iter().any(|c| c == column) {
                db.execute_batch(&format!("ALTER TABLE functions ADD COLUMN {column} TEXT"))?;
            }
        }
        Ok(Registry { db })
    }

    /// Inserts or replaces `record`.
    pub fn upsert(&self, record: &Record) -> Result<(), RegistryError> {
        let config = serde_json::to_string(&record.config).map_err(|e| RegistryError::Corrupt {
            name: record.name.clone(),
            message: e.to_string(),
        })?;
        self.db.execute(
            "INSERT INTO functions (name, version, config, module_sha256, snapshot_dir, deployed_at,
                 image_ref, image_digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(name) DO UPDATE SET version = ?2, config = ?3, module_sha256 = ?4,
                 snapshot_dir = ?5, deployed_at = ?6, image_ref = ?7, image_digest = ?8",
            params![
                record.name,
                record.version as i64,
                config,
                record.module_sha256,
                record.snapshot_dir.to_string_lossy(),
                record.deployed_at as i64,
                record.image.as_ref().map(|i| &i.reference),
                record.image.as_ref().map(|i| &i.digest),
            ],
        )?;
        Ok(())
    }

    /// Removes `name`; true if it was there.
    pub fn remove(&self, name: &str) -> Result<bool, RegistryError> {
        Ok(self
            .db
            .execute("DELETE FROM functions WHERE name = ?1", params![name])?
            > 0)
    }

    /// The stored version of `name`.
    pub fn version(&self, name: &str) -> Result<Option<u64>, RegistryError> {
        Ok(self
            .db
            .query_row(
                "SELECT version FROM functions WHERE name = ?1",
                params![name],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
    }

    /// Every record, by name.
    pub fn list(&self) -> Result<Vec<Record>, RegistryError> {
        let mut stmt = self.db.prepare(
            "SELECT name, version, config, module_sha256, snapshot_dir, deployed_at,
                 image_ref, image_digest
             FROM functions ORDER BY name",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, Option<String>>(6)?,
                row.get::<_, Option<String>>(7)?,
            ))
        })?;
        rows.map(|row| {
            let (name, version, config, module_sha256, dir, deployed_at, image_ref, image_digest) =
                row?;
            let config = serde_json::from_str(&config).map_err(|e| RegistryError::Corrupt {
                name: name.clone(),
                message: e.to_string(),
            })?;
            Ok(Record {
                name,
                version: version as u64,
                config,
                module_sha256,
                snapshot_dir: PathBuf::from(dir),
                deployed_at: deployed_at as u64,
                image: image_ref
                    .zip(image_digest)
                    .map(|(reference, digest)| FunctionImage { reference, digest }),
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: u64) -> Record {
        Record {
            name: name.into(),
            version,
            config: FunctionConfig {
                memory_mib: 64,
                ..FunctionConfig::default()
            },
            module_sha256: "ab".repeat(32),
            image: (version == 2).then(|| FunctionImage {
                reference: format!("{name}:v2"),
                digest: format!("sha256:{}", "cd".repeat(32)),
            }),
            snapshot_dir: PathBuf::from(format!("/state/functions/{name}/v{version}")),
            deployed_at: 1_700_000_000 + version,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        {
            let reg = Registry::open(&path).unwrap();
            reg.upsert(&record("b", 1)).unwrap();
            reg.upsert(&record("a", 1)).unwrap();
            reg.upsert(&record("a", 2)).unwrap();
        }
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.list().unwrap(), vec![record("a", 2), record("b", 1)]);
        assert_eq!(reg.version("a").unwrap(), Some(2));
        assert!(reg.remove("a").unwrap());
        assert!(!reg.remove("a").unwrap());
        assert_eq!(reg.version("a").unwrap(), None);
        assert_eq!(reg.list().unwrap(), vec![record("b", 1)]);
    }

    #[test]
    fn databases_from_before_images_gain_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE functions (name TEXT PRIMARY KEY, version INTEGER NOT NULL,
                 config TEXT NOT NULL, module_sha256 TEXT NOT NULL, snapshot_dir TEXT NOT NULL,
                 deployed_at INTEGER NOT NULL);
                 INSERT INTO functions VALUES ('old', 1, '{}', 'h', '/d', 5);",
            )
            .unwrap();
        let reg = Registry::open(&path).unwrap();
        let old = &reg.list().unwrap()[0];
        assert_eq!((old.name.as_str(), old.image.clone()), ("old", None));
        reg.upsert(&record("a", 2)).unwrap();
        drop(reg);
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.list().unwrap()[0], record("a", 2));
    }

    #[test]
    fn an_unreadable_row_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("wisp.db")).unwrap();
        reg.db
            .execute(
                "INSERT INTO functions VALUES ('x', 1, 'not json', 'h', '/d', 0, NULL, NULL)",
                [],
            )
            .unwrap();
        assert!(matches!(
            reg.list(),
            Err(RegistryError::Corrupt { name, .. }) if name == "x"
        ));
    }
}
