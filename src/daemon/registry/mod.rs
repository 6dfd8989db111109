//! The function registry: every kept version of every function with its
//! settings and snapshot, each name's last version number, the aliases
//! and the rollouts, in an embedded SQLite database next to the
//! snapshots. It is what a restarted daemon (even after `kill -9`) brings
//! its functions back from.
//!
//! Changes go through [`Registry::write`], one transaction each, so that a
//! crash between two writes of one change (a version and the alias moved
//! to it, a rollout's step and its alias) leaves neither or both; the
//! aliases' foreign keys make the database itself refuse an alias to a
//! missing version.

mod rollouts;
pub mod schema;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::api::{AdditionalVersion, AliasRouting, FunctionConfig, FunctionImage, RolloutInfo};

/// One kept version of a function as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The function's name.
    pub name: String,
    /// Its number: never reused for the name, even after a delete.
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

/// An alias as stored: the function, its name and where it routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasRecord {
    /// The function.
    pub function: String,
    /// The alias.
    pub alias: String,
    /// Where it sends traffic.
    pub routing: AliasRouting,
}

/// Registry failures.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed.
    #[error("registry database")]
    Db(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("registry row for `{name}` is unreadable: {message}")]
    Corrupt {
        /// The function.
        name: String,
        /// What was wrong.
        message: String,
    },
    /// The database was written by a newer wisp.
    #[error(
        "the registry has format {found}, newer than this wisp's {}: run the wisp that wrote it",
        schema::CURRENT
    )]
    NewerFormat {
        /// Its `user_version`.
        found: i64,
    },
}

/// The registry database.
pub struct Registry {
    db: Connection,
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt {
        name: name.to_string(),
        message: e.to_string(),
    }
}

impl Registry {
    /// Opens (creating if needed) the registry at `path`, bringing an older
    /// format forward.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let mut db = Connection::open(path)?;
        // WAL + synchronous=FULL: a committed deploy survives kill -9 and
        // power loss; readers never block the writer.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut db)?;
        Ok(Registry { db })
    }

    /// Runs `change` in one transaction: all of it is committed, or none.
    pub fn write<T>(
        &mut self,
        change: impl FnOnce(&Writer<'_>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let writer = Writer(self.db.transaction()?);
        let value = change(&writer)?;
        writer.0.commit()?;
        Ok(value)
    }

    /// The number the next version of `name` gets: one past the last it
    /// ever had, deleted or not.
    pub fn next_version(&self, name: &str) -> Result<u64, RegistryError> {
        let last = self
            .db
            .query_row(
                "SELECT last_version FROM names WHERE name = ?1",
                params![name],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(last as u64 + 1)
    }

    /// Every version, by name and number.
    pub fn versions(&self) -> Result<Vec<Record>, RegistryError> {
        let mut stmt = self.db.prepare(
            "SELECT name, version, config, module_sha256, snapshot_dir, deployed_at,
                 image_ref, image_digest
             FROM versions ORDER BY name, version",
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
            let config = serde_json::from_str(&config).map_err(|e| corrupt(&name, e))?;
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

    /// Every alias, by function and name.
    pub fn aliases(&self) -> Result<Vec<AliasRecord>, RegistryError> {
        let mut stmt = self.db.prepare(
            "SELECT name, alias, version, additional_version, additional_weight, reserved,
                 max_ready
             FROM aliases ORDER BY name, alias",
        )?;
        let rows = stmt.query_map([], |row| {
            let additional = match (row.get::<_, Option<i64>>(3)?, row.get::<_, Option<i64>>(4)?) {
                (Some(version), Some(weight)) => Some(AdditionalVersion {
                    version: version as u64,
                    weight: weight as u32,
                }),
                _ => None,
            };
            Ok(AliasRecord {
                function: row.get(0)?,
                alias: row.get(1)?,
                routing: AliasRouting {
                    version: row.get::<_, i64>(2)? as u64,
                    additional,
                    reserved: row.get::<_, Option<i64>>(5)?.map(|n| n as u32),
                    max_ready: row.get::<_, Option<i64>>(6)?.map(|n| n as u32),
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every function's latest rollout, by name.
    pub fn rollouts(&self) -> Result<Vec<(String, RolloutInfo)>, RegistryError> {
        rollouts::all(&self.db)
    }
}

/// The changes one [`Registry::write`] makes, in its transaction.
pub struct Writer<'a>(Transaction<'a>);

impl Writer<'_> {
    /// Adds a version, and records its number as the name's last.
    pub fn put_version(&self, record: &Record) -> Result<(), RegistryError> {
        let config = serde_json::to_string(&record.config).map_err(|e| corrupt(&record.name, e))?;
        self.0.execute(
            "INSERT INTO versions (name, version, config, module_sha256, snapshot_dir,
                 deployed_at, image_ref, image_digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
        self.0.execute(
            "INSERT INTO names (name, last_version) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET last_version = max(last_version, ?2)",
            params![record.name, record.version as i64],
        )?;
        Ok(())
    }

    /// Removes a version (refused by the database while an alias points
    /// to it); true if it was there.
    pub fn remove_version(&self, name: &str, version: u64) -> Result<bool, RegistryError> {
        Ok(self.0.execute(
            "DELETE FROM versions WHERE name = ?1 AND version = ?2",
            params![name, version as i64],
        )? > 0)
    }

    /// Creates or changes an alias (refused by the database if a version
    /// it names is missing).
    pub fn put_alias(
        &self,
        name: &str,
        alias: &str,
        routing: &AliasRouting,
    ) -> Result<(), RegistryError> {
        self.0.execute(
            "INSERT OR REPLACE INTO aliases (name, alias, version, additional_version,
                 additional_weight, reserved, max_ready)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                alias,
                routing.version as i64,
                routing.additional.map(|a| a.version as i64),
                routing.additional.map(|a| i64::from(a.weight)),
                routing.reserved.map(i64::from),
                routing.max_ready.map(i64::from),
            ],
        )?;
        Ok(())
    }

    /// Removes an alias; true if it was there.
    pub fn remove_alias(&self, name: &str, alias: &str) -> Result<bool, RegistryError> {
        Ok(self.0.execute(
            "DELETE FROM aliases WHERE name = ?1 AND alias = ?2",
            params![name, alias],
        )? > 0)
    }

    /// Records `name`'s rollout, replacing the previous one.
    pub fn put_rollout(&self, name: &str, rollout: &RolloutInfo) -> Result<(), RegistryError> {
        rollouts::put(&self.0, name, rollout)
    }

    /// Removes every version, alias and rollout of `name`; its last version
    /// number is kept, so that numbers are never reused. True if it had a
    /// version.
    pub fn remove_function(&self, name: &str) -> Result<bool, RegistryError> {
        self.0
            .execute("DELETE FROM aliases WHERE name = ?1", params![name])?;
        self.0
            .execute("DELETE FROM rollouts WHERE name = ?1", params![name])?;
        Ok(self
            .0
            .execute("DELETE FROM versions WHERE name = ?1", params![name])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LIVE_ALIAS;

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

    fn deploy(reg: &mut Registry, record: &Record) {
        reg.write(|w| {
            w.put_version(record)?;
            w.put_alias(&record.name, LIVE_ALIAS, &AliasRouting::to(record.version))
        })
        .unwrap();
    }

    fn live(reg: &Registry) -> Vec<(String, u64)> {
        reg.aliases()
            .unwrap()
            .into_iter()
            .filter(|a| a.alias == LIVE_ALIAS)
            .map(|a| (a.function, a.routing.version))
            .collect()
    }

    #[test]
    fn versions_and_aliases_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        {
            let mut reg = Registry::open(&path).unwrap();
            deploy(&mut reg, &record("b", 1));
            deploy(&mut reg, &record("a", 1));
            deploy(&mut reg, &record("a", 2));
        }
        let reg = Registry::open(&path).unwrap();
        assert_eq!(
            reg.versions().unwrap(),
            vec![record("a", 1), record("a", 2), record("b", 1)]
        );
        assert_eq!(live(&reg), [("a".into(), 2), ("b".into(), 1)]);
        assert_eq!(reg.next_version("a").unwrap(), 3);
        assert_eq!(reg.next_version("new").unwrap(), 1);
    }

    #[test]
    fn numbers_are_never_reused_after_a_delete() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&dir.path().join("wisp.db")).unwrap();
        deploy(&mut reg, &record("a", 1));
        deploy(&mut reg, &record("a", 2));
        assert!(reg.write(|w| w.remove_function("a")).unwrap());
        assert!(!reg.write(|w| w.remove_function("a")).unwrap());
        assert!(reg.versions().unwrap().is_empty());
        assert!(reg.aliases().unwrap().is_empty());
        assert_eq!(reg.next_version("a").unwrap(), 3);
    }

    #[test]
    fn the_database_refuses_aliases_to_missing_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&dir.path().join("wisp.db")).unwrap();
        deploy(&mut reg, &record("a", 1));
        deploy(&mut reg, &record("a", 2));
        // An aliased version cannot go, and an alias cannot name a missing
        // one: the whole change is undone.
        reg.write(|w| w.remove_version("a", 2)).unwrap_err();
        let split = AliasRouting {
            additional: Some(AdditionalVersion {
                version: 9,
                weight: 10,
            }),
            ..AliasRouting::to(1)
        };
        reg.write(|w| {
            w.remove_alias("a", LIVE_ALIAS)?;
            w.put_alias("a", "canary", &split)
        })
        .unwrap_err();
        assert_eq!(live(&reg), [("a".into(), 2)]);
        assert_eq!(reg.versions().unwrap().len(), 2);
        // Unaliased, it can.
        assert!(reg.write(|w| w.remove_version("a", 1)).unwrap());
        assert_eq!(reg.versions().unwrap(), vec![record("a", 2)]);
    }

    #[test]
    fn rollouts_are_recorded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        let rollout = RolloutInfo {
            alias: LIVE_ALIAS.into(),
            from: 1,
            to: 2,
            steps: vec![5, 50, 100],
            interval_ms: 250,
            max_error_rate: 0.015,
            min_invocations: 7,
            step: 1,
            state: crate::api::RolloutState::Failed,
            reason: Some("errors".into()),
            started_at: 10,
            updated_at: 20,
            window: None,
        };
        Registry::open(&path)
            .unwrap()
            .write(|w| w.put_rollout("a", &rollout))
            .unwrap();
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.rollouts().unwrap(), vec![("a".to_string(), rollout)]);
    }

    /// A database of the format before versions (`functions`, one row per
    /// function), with and without the image columns.
    fn old_database(path: &Path, with_images: bool) {
        let images = if with_images {
            ", image_ref TEXT, image_digest TEXT"
        } else {
            ""
        };
        let values = if with_images { ", NULL, NULL" } else { "" };
        Connection::open(path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE functions (name TEXT PRIMARY KEY, version INTEGER NOT NULL,
                 config TEXT NOT NULL, module_sha256 TEXT NOT NULL, snapshot_dir TEXT NOT NULL,
                 deployed_at INTEGER NOT NULL{images});
                 INSERT INTO functions VALUES ('old', 3, '{{}}', 'h', '/d', 5{values});"
            ))
            .unwrap();
    }

    #[test]
    fn databases_of_the_format_before_versions_are_brought_forward() {
        for with_images in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("wisp.db");
            old_database(&path, with_images);
            let mut reg = Registry::open(&path).unwrap();
            let old = &reg.versions().unwrap()[0];
            assert_eq!(
                (old.name.as_str(), old.version, old.image.clone()),
                ("old", 3, None)
            );
            assert_eq!(old.config, FunctionConfig::default());
            assert_eq!(live(&reg), [("old".into(), 3)]);
            assert_eq!(reg.next_version("old").unwrap(), 4);
            deploy(&mut reg, &record("old", 4));
            drop(reg);
            // Opened again, nothing is migrated twice.
            let reg = Registry::open(&path).unwrap();
            assert_eq!(reg.versions().unwrap().len(), 2);
            assert_eq!(live(&reg), [("old".into(), 4)]);
        }
    }

    #[test]
    fn a_database_from_a_newer_wisp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", schema::CURRENT + 1)
            .unwrap();
        assert!(matches!(
            Registry::open(&path),
            Err(RegistryError::NewerFormat { .. })
        ));
    }

    #[test]
    fn an_unreadable_row_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("wisp.db")).unwrap();
        reg.db
            .execute(
                "INSERT INTO versions VALUES ('x', 1, 'not json', 'h', '/d', 0, NULL, NULL)",
                [],
            )
            .unwrap();
        assert!(matches!(
            reg.versions(),
            Err(RegistryError::Corrupt { name, .. }) if name == "x"
        ));
    }
}
