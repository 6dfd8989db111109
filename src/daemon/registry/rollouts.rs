//! Rollout rows: one per function, its latest rollout.

use rusqlite::{params, Connection};

use super::{corrupt, RegistryError};
use crate::api::{RolloutInfo, RolloutState};

/// Records `rollout` as `name`'s latest.
pub(super) fn put(db: &Connection, name: &str, rollout: &RolloutInfo) -> Result<(), RegistryError> {
    let steps = serde_json::to_string(&rollout.steps).map_err(|e| corrupt(name, e))?;
    db.execute(
        "INSERT OR REPLACE INTO rollouts (name, alias, from_version, to_version, steps,
             interval_ms, max_error_rate, min_invocations, step, state, reason, started_at,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            name,
            rollout.alias,
            rollout.from as i64,
            rollout.to as i64,
            steps,
            rollout.interval_ms as i64,
            rollout.max_error_rate,
            rollout.min_invocations as i64,
            rollout.step as i64,
            rollout.state.as_str(),
            rollout.reason,
            rollout.started_at as i64,
            rollout.updated_at as i64,
        ],
    )?;
    Ok(())
}

/// Every function's latest rollout, by name.
pub(super) fn all(db: &Connection) -> Result<Vec<(String, RolloutInfo)>, RegistryError> {
    let mut stmt = db.prepare(
        "SELECT name, alias, from_version, to_version, steps, interval_ms, max_error_rate,
             min_invocations, step, state, reason, started_at, updated_at
         FROM rollouts ORDER BY name",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(9)?,
            RolloutInfo {
                alias: row.get(1)?,
                from: row.get::<_, i64>(2)? as u64,
                to: row.get::<_, i64>(3)? as u64,
                steps: Vec::new(),
                interval_ms: row.get::<_, i64>(5)? as u64,
                max_error_rate: row.get(6)?,
                min_invocations: row.get::<_, i64>(7)? as u64,
                step: row.get::<_, i64>(8)? as usize,
                state: RolloutState::Running,
                reason: row.get(10)?,
                started_at: row.get::<_, i64>(11)? as u64,
                updated_at: row.get::<_, i64>(12)? as u64,
                window: None,
            },
        ))
    })?;
    rows.map(|row| {
        let (name, steps, state, mut rollout) = row?;
        rollout.steps = serde_json::from_str(&steps).map_err(|e| corrupt(&name, e))?;
        rollout.state = RolloutState::parse(&state)
            .ok_or_else(|| corrupt(&name, format!("unknown rollout state `{state}`")))?;
        Ok((name, rollout))
    })
    .collect()
}
