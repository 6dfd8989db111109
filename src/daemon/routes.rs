//! Which version of a function serves a request: a function's kept
//! versions and aliases as the daemon holds them, the qualifier of an
//! invocation (`live`, an alias, a version number), the weighted choice
//! of a split alias, and each version's pool size from its share of the
//! traffic.
//!
//! A [`Deployed`] is never changed in place: a change builds a new one and
//! swaps it in, so an invocation reads one consistent set under a short
//! read lock.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use axum::http::StatusCode;

use super::error::ApiError;
use super::function::Function;
use crate::api::{AliasInfo, AliasRouting, LIVE_ALIAS};

/// A function's kept versions and its aliases.
#[derive(Clone, Default)]
pub struct Deployed {
    /// Every kept version that could be brought up, by number.
    pub versions: BTreeMap<u64, Arc<Function>>,
    /// Every alias, by name.
    pub aliases: BTreeMap<String, AliasRouting>,
}

/// What an invocation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Qualifier {
    /// An alias (`live` when the request names none).
    Alias(String),
    /// A version by number.
    Version(u64),
}

impl Qualifier {
    /// Parses `?qualifier=`: digits name a version, anything else an alias.
    pub fn parse(text: Option<&str>) -> Qualifier {
        match text {
            None | Some("") => Qualifier::Alias(LIVE_ALIAS.to_string()),
            Some(t) => match t.parse::<u64>() {
                Ok(n) if t.bytes().all(|b| b.is_ascii_digit()) => Qualifier::Version(n),
                _ => Qualifier::Alias(t.to_string()),
            },
        }
    }
}

/// The version chosen for a request, and the alias it went through.
pub struct Chosen {
    /// The version.
    pub function: Arc<Function>,
    /// The alias, unless the request named a version.
    pub alias: Option<String>,
}

/// Checks an alias name: a function name's characters, not all digits (a
/// qualifier of digits names a version).
pub fn check_alias_name(alias: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&alias.len())
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && alias.as_bytes()[0].is_ascii_alphanumeric()
        && !alias.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_alias",
            format!("invalid alias `{alias}`: use 1-63 of a-z, 0-9, `-`, `_`, starting with a letter or digit, not only digits"),
        ))
    }
}

/// 404 for a version `name` does not have.
pub fn no_version(name: &str, version: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "version_not_found",
        format!("`{name}` has no version {version}"),
    )
}

/// 404 for an alias `name` does not have.
pub fn no_alias(name: &str, alias: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "alias_not_found",
        format!("`{name}` has no alias `{alias}`"),
    )
}

impl Deployed {
    /// The version `qualifier` routes this request to.
    pub fn choose(&self, name: &str, qualifier: &Qualifier) -> Result<Chosen, ApiError> {
        let (version, alias) = match qualifier {
            Qualifier::Version(v) => (*v, None),
            Qualifier::Alias(alias) => {
                let routing = self
                    .aliases
                    .get(alias)
                    .ok_or_else(|| no_alias(name, alias))?;
                (pick(routing, percent_roll()), Some(alias.clone()))
            }
        };
        let function = self.versions.get(&version).cloned().ok_or_else(|| {
            if alias.is_some() {
                // Registered but not brought back at start.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "version_unavailable",
                    format!("version {version} of `{name}` could not be brought back; see the daemon's log"),
                )
            } else {
                no_version(name, version)
            }
        })?;
        Ok(Chosen { function, alias })
    }

    /// The version `live` sends most traffic to, or the newest.
    pub fn primary(&self) -> Option<&Arc<Function>> {
        self.aliases
            .get(LIVE_ALIAS)
            .and_then(|r| self.versions.get(&r.version))
            .or_else(|| self.versions.values().next_back())
    }

    /// The aliases that route to `version` (a weight of 0 counts).
    pub fn aliases_of(&self, version: u64) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, r)| routes_to(r, version))
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Every alias as the API shows it.
    pub fn alias_infos(&self) -> Vec<AliasInfo> {
        self.aliases
            .iter()
            .map(|(name, routing)| AliasInfo {
                name: name.clone(),
                routing: routing.clone(),
            })
            .collect()
    }

    /// Sets each version's pool size from the aliases: a version takes
    /// its share of each alias routing to it of the alias's `reserved`
    /// and `max_ready` (or its own settings), rounded up; a version no
    /// alias routes to keeps no instances ready.
    pub fn size_pools(&self) {
        for (v, f) in &self.versions {
            let (mut reserved, mut max_ready) = (0f64, 0f64);
            for routing in self.aliases.values() {
                let share = share_of(routing, *v);
                if share > 0.0 {
                    reserved += f64::from(routing.reserved.unwrap_or(f.config.reserved)) * share;
                    max_ready += f64::from(routing.max_ready.unwrap_or(f.config.max_ready)) * share;
                }
            }
            let max_ready = max_ready.ceil() as u32;
            let reserved = (reserved.ceil() as u32).min(max_ready);
            f.sizing.set(reserved, max_ready);
        }
    }
}

/// Whether `routing` names `version`.
pub fn routes_to(routing: &AliasRouting, version: u64) -> bool {
    routing.version == version || routing.additional.is_some_and(|a| a.version == version)
}

/// The fraction of `routing`'s traffic `version` takes.
pub fn share_of(routing: &AliasRouting, version: u64) -> f64 {
    let extra = routing
        .additional
        .map_or(0.0, |a| f64::from(a.weight.min(100)) / 100.0);
    let mut share = 0.0;
    if routing.version == version {
        share += 1.0 - extra;
    }
    if routing.additional.is_some_and(|a| a.version == version) {
        share += extra;
    }
    share
}

/// The version a request with `roll` (uniform in 0..100) goes to.
pub fn pick(routing: &AliasRouting, roll: u32) -> u64 {
    match routing.additional {
        Some(a) if roll < a.weight => a.version,
        _ => routing.version,
    }
}

thread_local! {
    /// Per-thread xorshift state, seeded from the process's random keys.
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A uniform number in 0..100, stateless across requests: each thread
/// draws from its own generator, no lock and no shared counter.
fn percent_roll() -> u32 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        // Multiply-shift: uniform enough over 0..100 for 64-bit input.
        ((u128::from(x) * 100) >> 64) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AdditionalVersion;

    fn split(weight: u32) -> AliasRouting {
        AliasRouting {
            additional: Some(AdditionalVersion { version: 8, weight }),
            ..AliasRouting::to(7)
        }
    }

    #[test]
    fn qualifiers_of_digits_are_versions() {
        assert_eq!(Qualifier::parse(None), Qualifier::Alias("live".into()));
        assert_eq!(Qualifier::parse(Some("")), Qualifier::Alias("live".into()));
        assert_eq!(Qualifier::parse(Some("12")), Qualifier::Version(12));
        assert_eq!(
            Qualifier::parse(Some("+12")),
            Qualifier::Alias("+12".into())
        );
        assert_eq!(
            Qualifier::parse(Some("canary")),
            Qualifier::Alias("canary".into())
        );
        check_alias_name("canary-2").unwrap();
        for bad in ["", "12", "Up", "a/b", "-a"] {
            assert_eq!(check_alias_name(bad).unwrap_err().code, "invalid_alias");
        }
    }

    #[test]
    fn weights_split_the_rolls() {
        let r = split(10);
        let to_8 = (0..100).filter(|&roll| pick(&r, roll) == 8).count();
        assert_eq!(to_8, 10);
        assert_eq!(pick(&split(0), 0), 7);
        assert_eq!(pick(&split(100), 99), 8);
        assert!((share_of(&r, 7) - 0.9).abs() < 1e-9);
        assert!((share_of(&r, 8) - 0.1).abs() < 1e-9);
        assert_eq!(share_of(&r, 9), 0.0);
        assert!(routes_to(&split(0), 8));
    }

    #[test]
    fn rolls_are_uniform() {
        let n = 200_000;
        let mut counts = [0u32; 100];
        for _ in 0..n {
            counts[percent_roll() as usize] += 1;
        }
        // Each bucket expects 2,000 (sigma ~44): 6 sigma either way.
        for (i, c) in counts.iter().enumerate() {
            assert!((1_730..=2_270).contains(c), "bucket {i}: {c}");
        }
    }
}
