//! The registry's tables, and bringing databases of earlier formats
//! forward. `PRAGMA user_version` says which format a database has:
//!
//! - 0: one row per function in `functions` (its current version only;
//!   the image columns came later and may be missing), or a new database;
//! - 1: every kept version (`versions`), each name's last number
//!   (`names`), aliases and rollouts.
//!
//! A migration runs in one transaction: a crash leaves the old format,
//! whole, and the next start migrates again.

use rusqlite::{Connection, OptionalExtension};

use super::RegistryError;

/// The format this build writes.
pub const CURRENT: i64 = 1;

/// The tables of format 1. Aliases reference versions, so the database
/// itself refuses an alias to a missing version and the removal of an
/// aliased one.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS names (
    name         TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    config        TEXT NOT NULL,
    module_sha256 TEXT NOT NULL,
    snapshot_dir  TEXT NOT NULL,
    deployed_at   INTEGER NOT NULL,
    image_ref     TEXT,
    image_digest  TEXT,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name               TEXT NOT NULL,
    alias              TEXT NOT NULL,
    version            INTEGER NOT NULL,
    additional_version INTEGER,
    additional_weight  INTEGER,
    reserved           INTEGER,
    max_ready          INTEGER,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version),
    FOREIGN KEY (name, additional_version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS rollouts (
    name            TEXT PRIMARY KEY,
    alias           TEXT NOT NULL,
    from_version    INTEGER NOT NULL,
    to_version      INTEGER NOT NULL,
    steps           TEXT NOT NULL,
    interval_ms     INTEGER NOT NULL,
    max_error_rate  REAL NOT NULL,
    min_invocations INTEGER NOT NULL,
    step            INTEGER NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT,
    started_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
";

/// Brings `db` to [`CURRENT`], creating the tables of a new database.
pub fn migrate(db: &mut Connection) -> Result<(), RegistryError> {
    let found: i64 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > CURRENT {
        return Err(RegistryError::NewerFormat { found });
    }
    if found == CURRENT {
        return Ok(());
    }
    let tx = db.transaction()?;
    tx.execute_batch(TABLES)?;
    if has_table(&tx, "functions")? {
        from_functions(&tx)?;
    }
    tx.pragma_update(None, "user_version", CURRENT)?;
    tx.commit()?;
    Ok(())
}

fn has_table(db: &Connection, table: &str) -> Result<bool, RegistryError> {
    Ok(db
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Format 0 to 1: each function's one version is kept, numbering goes on
/// from it, and `live` points at it.
fn from_functions(db: &Connection) -> Result<(), RegistryError> {
    // Databases from before images lack these columns.
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('functions')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for column in ["image_ref", "image_digest"] {
        if !columns.iter().any(|c| c == column) {
            db.execute_batch(&format!("ALTER TABLE functions ADD COLUMN {column} TEXT"))?;
        }
    }
    db.execute_batch(
        "INSERT INTO versions (name, version, config, module_sha256, snapshot_dir, deployed_at,
             image_ref, image_digest)
         SELECT name, version, config, module_sha256, snapshot_dir, deployed_at,
             image_ref, image_digest FROM functions;
         INSERT INTO names (name, last_version) SELECT name, version FROM functions;
         INSERT INTO aliases (name, alias, version) SELECT name, 'live', version FROM functions;
         DROP TABLE functions;",
    )?;
    Ok(())
}
