//! Versions and aliases through the API: `GET .../versions`,
//! `DELETE .../versions/{n}`, `PUT`/`GET`/`DELETE .../aliases/{alias}`,
//! and the retention limit that deletes the oldest versions no alias
//! routes to.
//!
//! Every change is written to the registry first, in one transaction, and
//! then swapped in: what the registry says is what serves. Changes of one
//! function run one at a time under its deploy lock.

use std::sync::Arc;

use axum::http::StatusCode;
use tracing::{info, warn};

use super::error::{storage_error, ApiError};
use super::host::{lock, Host};
use super::images::version_pin;
use super::routes::{check_alias_name, no_alias, no_version, routes_to, Deployed};
use crate::api::{AliasInfo, AliasRouting, RolloutInfo, VersionInfo, LIVE_ALIAS};

/// What moving an alias does to a rollout of it.
pub enum RolloutEffect {
    /// A request moved it: a running rollout of the alias is cancelled,
    /// for this reason.
    Cancel(String),
    /// The rollout itself moved it: record the rollout so.
    Record(RolloutInfo),
}

/// Most instances an alias may ask to keep ready (as a function's
/// `max_ready`).
const MAX_READY: u32 = 10_000;

impl Host {
    /// `GET /v1/functions/{name}/versions`: every kept version, oldest
    /// first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, ApiError> {
        let deployed = self
            .deployed(name)
            .ok_or_else(|| ApiError::no_function(name))?;
        Ok(deployed
            .versions
            .iter()
            .map(|(v, f)| f.version_info(deployed.aliases_of(*v)))
            .collect())
    }

    /// `GET /v1/functions/{name}/aliases/{alias}`.
    pub fn alias(&self, name: &str, alias: &str) -> Result<AliasInfo, ApiError> {
        let deployed = self
            .deployed(name)
            .ok_or_else(|| ApiError::no_function(name))?;
        let routing = deployed
            .aliases
            .get(alias)
            .ok_or_else(|| no_alias(name, alias))?;
        Ok(AliasInfo {
            name: alias.to_string(),
            routing: routing.clone(),
        })
    }

    /// `DELETE /v1/functions/{name}/versions/{n}`: refused with 409 while
    /// an alias routes to it; its in-flight invocations finish.
    pub async fn delete_version(
        self: &Arc<Self>,
        name: &str,
        version: u64,
    ) -> Result<(), ApiError> {
        let name = name.to_string();
        self.change(&name.clone(), "delete", move |host| {
            let deployed = host
                .deployed(&name)
                .ok_or_else(|| ApiError::no_function(&name))?;
            if !deployed.versions.contains_key(&version) {
                return Err(no_version(&name, version));
            }
            let aliases = deployed.aliases_of(version);
            if !aliases.is_empty() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "version_aliased",
                    format!(
                        "version {version} of `{name}` is routed to by {}: move {} first",
                        aliases.join(", "),
                        if aliases.len() == 1 { "it" } else { "them" }
                    ),
                ));
            }
            host.remove_versions(&name, &deployed, &[version])
        })
        .await
    }

    /// `PUT /v1/functions/{name}/aliases/{alias}`: creates or moves an
    /// alias (true if it is new). A rollout moving it is cancelled.
    pub async fn put_alias(
        self: &Arc<Self>,
        name: &str,
        alias: &str,
        routing: AliasRouting,
    ) -> Result<(AliasInfo, bool), ApiError> {
        check_alias_name(alias)?;
        check_routing(&routing)?;
        let (owned, alias) = (name.to_string(), alias.to_string());
        self.change(name, "alias", move |host| {
            let reason = format!("alias `{alias}` was set by a request");
            let created = host.set_alias(
                &owned,
                &alias,
                Some(&routing),
                RolloutEffect::Cancel(reason),
            )?;
            Ok((
                AliasInfo {
                    name: alias,
                    routing,
                },
                created,
            ))
        })
        .await
    }

    /// `DELETE /v1/functions/{name}/aliases/{alias}`; `live` stays while
    /// the function exists (invocations without a qualifier use it).
    pub async fn delete_alias(self: &Arc<Self>, name: &str, alias: &str) -> Result<(), ApiError> {
        if alias == LIVE_ALIAS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "live_alias_required",
                "`live` cannot be deleted: invocations without a qualifier go through it; move it with PUT instead",
            ));
        }
        let (owned, alias) = (name.to_string(), alias.to_string());
        self.change(name, "alias", move |host| {
            let reason = format!("alias `{alias}` was deleted");
            host.set_alias(&owned, &alias, None, RolloutEffect::Cancel(reason))
                .map(|_| ())
        })
        .await
    }

    /// Sets (or, with `None`, removes) an alias in the registry and then
    /// in memory, with what it does to a rollout in the same transaction;
    /// applies the retention limit after. Call it under the deploy lock,
    /// on a blocking thread. Returns true if the alias is new.
    pub(super) fn set_alias(
        &self,
        name: &str,
        alias: &str,
        routing: Option<&AliasRouting>,
        effect: RolloutEffect,
    ) -> Result<bool, ApiError> {
        let mut deployed = self
            .deployed(name)
            .map(|d| (*d).clone())
            .ok_or_else(|| ApiError::no_function(name))?;
        if let Some(routing) = routing {
            for v in std::iter::once(routing.version).chain(routing.additional.map(|a| a.version)) {
                if !deployed.versions.contains_key(&v) {
                    return Err(no_version(name, v));
                }
            }
        } else if !deployed.aliases.contains_key(alias) {
            return Err(no_alias(name, alias));
        }
        let cancelled = match effect {
            RolloutEffect::Cancel(reason) => self.rollouts.cancel_of_alias(name, alias, reason),
            RolloutEffect::Record(rollout) => Some(rollout),
        };
        lock(&self.registry)
            .write(|w| {
                match routing {
                    Some(routing) => w.put_alias(name, alias, routing)?,
                    None => {
                        w.remove_alias(name, alias)?;
                    }
                }
                match &cancelled {
                    Some(rollout) => w.put_rollout(name, rollout),
                    None => Ok(()),
                }
            })
            .map_err(|e| storage_error("recording the alias", &e))?;
        let created = match routing {
            Some(routing) => deployed
                .aliases
                .insert(alias.to_string(), routing.clone())
                .is_none(),
            None => {
                deployed.aliases.remove(alias);
                false
            }
        };
        self.set_deployed(name, deployed);
        // After the alias: whoever sees the rollout's new state sees the
        // routing it set.
        if let Some(rollout) = cancelled {
            self.rollouts.set(name, rollout);
        }
        info!(function = name, alias, routing = ?routing, "alias set");
        self.retain(name);
        Ok(created)
    }

    /// Deletes the oldest versions of `name` no alias routes to beyond the
    /// `--keep-versions` newest of them. Call it under the deploy lock.
    pub(super) fn retain(&self, name: &str) {
        let Some(deployed) = self.deployed(name) else {
            return;
        };
        let unaliased: Vec<u64> = deployed
            .versions
            .keys()
            .copied()
            .filter(|v| !deployed.aliases.values().any(|r| routes_to(r, *v)))
            .collect();
        let excess = unaliased.len().saturating_sub(self.settings.keep_versions);
        if excess == 0 {
            return;
        }
        if let Err(e) = self.remove_versions(name, &deployed, &unaliased[..excess]) {
            warn!(function = name, error = %e.message, "deleting versions beyond the retention limit");
        }
    }

    /// Removes unaliased `versions` from the registry, then from memory
    /// (they stop admitting; in-flight invocations keep their mappings),
    /// then their snapshots.
    fn remove_versions(
        &self,
        name: &str,
        deployed: &Deployed,
        versions: &[u64],
    ) -> Result<(), ApiError> {
        lock(&self.registry)
            .write(|w| {
                for v in versions {
                    w.remove_version(name, *v)?;
                }
                Ok(())
            })
            .map_err(|e| storage_error("removing versions from the registry", &e))?;
        let mut kept = deployed.clone();
        for v in versions {
            kept.versions.remove(v);
        }
        self.set_deployed(name, kept);
        for v in versions {
            let _ = std::fs::remove_dir_all(self.store.snapshot_dir(name, *v));
            // Only a version deployed from an image has a pin: the others
            // never wait for the store's lock.
            let pinned = deployed
                .versions
                .get(v)
                .is_some_and(|f| f.source_image.is_some());
            if pinned {
                if let Err(e) = self.images.unpin(&version_pin(name, *v)) {
                    warn!(function = name, version = v, error = %e, "removing the version's image pin");
                }
            }
            self.metrics.forget_version(name, *v);
            info!(function = name, version = v, "version deleted");
        }
        Ok(())
    }
}

/// Checks an alias's routing on its own: a weight is a percentage, a split
/// names two versions, the pool settings are in range.
fn check_routing(routing: &AliasRouting) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::bad_request("invalid_alias", m));
    if let Some(a) = routing.additional {
        if a.weight > 100 {
            return bad(format!(
                "additional.weight {} must be from 0 to 100",
                a.weight
            ));
        }
        if a.version == routing.version {
            return bad(format!(
                "additional.version {} must differ from version",
                a.version
            ));
        }
    }
    let max_ready = routing.max_ready.unwrap_or(MAX_READY);
    if max_ready > MAX_READY || routing.reserved.is_some_and(|r| r > max_ready) {
        return bad(format!(
            "reserved {:?} and max_ready {:?} must satisfy reserved <= max_ready <= {MAX_READY}",
            routing.reserved, routing.max_ready
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AdditionalVersion;

    #[test]
    fn routings_are_checked() {
        let split = |version, weight| AliasRouting {
            additional: Some(AdditionalVersion { version, weight }),
            ..AliasRouting::to(1)
        };
        check_routing(&split(2, 100)).unwrap();
        check_routing(&split(2, 0)).unwrap();
        for bad in [split(2, 101), split(1, 5)] {
            assert_eq!(check_routing(&bad).unwrap_err().code, "invalid_alias");
        }
        let pools = AliasRouting {
            reserved: Some(3),
            max_ready: Some(2),
            ..AliasRouting::to(1)
        };
        check_routing(&pools).unwrap_err();
    }
}
