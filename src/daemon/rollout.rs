//! Gradual rollouts (`POST /v1/functions/{name}/rollout`): the daemon
//! moves an alias from its version to another step by step, each step a
//! larger share of the traffic, and at the end of each step compares the
//! failures (traps, timeouts, other errors and non-zero exits) of the new
//! version in that step with the old version's since the rollout started.
//! Past the allowed excess the alias goes back to the old version and the
//! rollout is marked failed, with the numbers as the reason.
//!
//! Each step is recorded in the registry in the same transaction as the
//! alias it sets, so a daemon killed mid-rollout finds both agreeing: it
//! resumes from the recorded step, or marks the rollout interrupted (and
//! routes the alias to a version it has) if a version could not be
//! brought back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use tracing::{info, warn};

use super::error::ApiError;
use super::function::Function;
use super::host::{lock, Host};
use super::routes::{check_alias_name, no_alias, no_version};
use super::versions::RolloutEffect;
use crate::api::{
    AdditionalVersion, AliasRouting, RolloutInfo, RolloutRequest, RolloutState, RolloutWindow,
};

/// How often a running rollout refreshes its window and looks whether it
/// was cancelled.
const TICK: Duration = Duration::from_millis(50);
/// Shortest step.
const MIN_INTERVAL_MS: u64 = 10;
/// Longest step: a day.
const MAX_INTERVAL_MS: u64 = 24 * 3600 * 1000;

/// The latest rollout of each function, as the daemon drives and shows it.
#[derive(Default)]
pub struct Rollouts {
    latest: Mutex<HashMap<String, Tracked>>,
    next_id: AtomicU64,
}

struct Tracked {
    info: RolloutInfo,
    /// Which driver owns it: a new rollout of the function gets a new id,
    /// and the old driver stops.
    id: u64,
}

impl Rollouts {
    /// `name`'s latest rollout.
    pub fn latest(&self, name: &str) -> Option<RolloutInfo> {
        lock(&self.latest).get(name).map(|t| t.info.clone())
    }

    /// Records `info` as `name`'s latest, keeping its driver.
    pub fn set(&self, name: &str, info: RolloutInfo) {
        let mut latest = lock(&self.latest);
        let id = latest.get(name).map_or(0, |t| t.id);
        latest.insert(name.to_string(), Tracked { info, id });
    }

    /// Records `info` as `name`'s latest, driven by a new driver; returns
    /// the driver's id.
    fn start(&self, name: &str, info: RolloutInfo) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.latest).insert(name.to_string(), Tracked { info, id });
        id
    }

    /// The running rollout driver `id` drives, if it still does.
    fn driven(&self, name: &str, id: u64) -> Option<RolloutInfo> {
        lock(&self.latest)
            .get(name)
            .filter(|t| t.id == id && t.info.state == RolloutState::Running)
            .map(|t| t.info.clone())
    }

    /// Every running rollout and its driver's id.
    fn running(&self) -> Vec<(String, u64)> {
        lock(&self.latest)
            .iter()
            .filter(|(_, t)| t.info.state == RolloutState::Running)
            .map(|(name, t)| (name.clone(), t.id))
            .collect()
    }

    /// Forgets `name` (deleted): its driver stops.
    pub fn remove(&self, name: &str) {
        lock(&self.latest).remove(name);
    }

    /// If a rollout of `name` moving `alias` runs, it as cancelled for
    /// `reason` (not yet recorded: the caller writes it with the alias).
    pub fn cancel_of_alias(&self, name: &str, alias: &str, reason: String) -> Option<RolloutInfo> {
        let mut info = self.latest(name)?;
        (info.state == RolloutState::Running && info.alias == alias).then(|| {
            ended(&mut info, RolloutState::Cancelled, Some(reason));
            info
        })
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Marks `info` as ended in `state`.
fn ended(info: &mut RolloutInfo, state: RolloutState, reason: Option<String>) {
    info.state = state;
    info.reason = reason;
    info.updated_at = now_unix();
    info.window = None;
}

/// The alias's routing at `info`'s current step, keeping `base`'s pool
/// settings; all of it to `to` at 100%.
fn routing_at(info: &RolloutInfo, base: &AliasRouting) -> AliasRouting {
    let weight = info.steps[info.step];
    let (version, additional) = if weight >= 100 {
        (info.to, None)
    } else {
        (
            info.from,
            Some(AdditionalVersion {
                version: info.to,
                weight,
            }),
        )
    };
    AliasRouting {
        version,
        additional,
        ..base.clone()
    }
}

/// Checks a rollout request on its own.
fn check_request(r: &RolloutRequest) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::bad_request("invalid_rollout", m));
    check_alias_name(&r.alias)?;
    let increasing = r.steps.windows(2).all(|w| w[0] < w[1]);
    if r.steps.is_empty()
        || !increasing
        || r.steps[0] == 0
        || r.steps.last() != Some(&100)
        || r.steps.len() > 100
    {
        return bad(format!(
            "steps {:?} must be increasing percentages from 1, ending at 100",
            r.steps
        ));
    }
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&r.interval_ms) {
        return bad(format!(
            "interval_ms {} must be from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}",
            r.interval_ms
        ));
    }
    if !(0.0..=1.0).contains(&r.max_error_rate) {
        return bad(format!(
            "max_error_rate {} must be a fraction from 0 to 1",
            r.max_error_rate
        ));
    }
    Ok(())
}

/// Failures of one version over a window: counters at its start.
#[derive(Clone, Copy)]
struct Baseline {
    invocations: u64,
    failures: u64,
}

impl Baseline {
    fn of(f: &Function) -> Baseline {
        let (invocations, failures) = f.stats.outcomes();
        Baseline {
            invocations,
            failures,
        }
    }

    /// Invocations and failures since.
    fn since(self, f: &Function) -> (u64, u64) {
        let now = Baseline::of(f);
        (
            now.invocations.saturating_sub(self.invocations),
            now.failures.saturating_sub(self.failures),
        )
    }
}

fn rate(failures: u64, invocations: u64) -> f64 {
    if invocations == 0 {
        0.0
    } else {
        failures as f64 / invocations as f64
    }
}

/// Why a step failed, if it did: `to`'s rate exceeds `from`'s by more than
/// allowed.
fn judge(info: &RolloutInfo, w: &RolloutWindow) -> Option<String> {
    let to = rate(w.to_errors, w.to_invocations);
    let from = rate(w.from_errors, w.from_invocations);
    (to - from > info.max_error_rate).then(|| {
        format!(
            "version {} failed {} of {} invocations ({:.1}%) at {}% of the traffic; version {} failed {} of {} ({:.1}%): more than {:.1} points apart",
            info.to,
            w.to_errors,
            w.to_invocations,
            to * 100.0,
            info.steps[info.step],
            info.from,
            w.from_errors,
            w.from_invocations,
            from * 100.0,
            info.max_error_rate * 100.0
        )
    })
}

impl Host {
    /// `POST /v1/functions/{name}/rollout`: starts moving an alias to
    /// `request.to`.
    pub async fn start_rollout(
        self: &Arc<Self>,
        name: &str,
        request: RolloutRequest,
    ) -> Result<RolloutInfo, ApiError> {
        check_request(&request)?;
        let owned = name.to_string();
        let (info, id) = self
            .change(name, "rollout", move |host| {
                host.begin_rollout(&owned, request)
            })
            .await?;
        // The driver checks before each step that the rollout is still its
        // own, so a cancel in between is seen.
        if let Some(id) = id {
            self.drive(name.to_string(), id);
        }
        Ok(info)
    }

    /// Checks the request against the function, records the first step
    /// with its alias; returns the driver's id unless it completed at once.
    fn begin_rollout(
        &self,
        name: &str,
        request: RolloutRequest,
    ) -> Result<(RolloutInfo, Option<u64>), ApiError> {
        let deployed = self
            .deployed(name)
            .ok_or_else(|| ApiError::no_function(name))?;
        let alias = deployed
            .aliases
            .get(&request.alias)
            .ok_or_else(|| no_alias(name, &request.alias))?
            .clone();
        if !deployed.versions.contains_key(&request.to) {
            return Err(no_version(name, request.to));
        }
        let conflict = |code, m: String| Err(ApiError::new(StatusCode::CONFLICT, code, m));
        if self
            .rollouts
            .latest(name)
            .is_some_and(|r| r.state == RolloutState::Running)
        {
            return conflict(
                "rollout_running",
                format!("a rollout of `{name}` is running: cancel it first (DELETE .../rollout)"),
            );
        }
        if alias.additional.is_some() {
            return conflict(
                "alias_split",
                format!(
                    "alias `{}` already splits its traffic: point it at one version first",
                    request.alias
                ),
            );
        }
        if alias.version == request.to {
            return conflict(
                "already_there",
                format!(
                    "alias `{}` already sends all traffic to version {}",
                    request.alias, request.to
                ),
            );
        }
        let now = now_unix();
        let mut info = RolloutInfo {
            alias: request.alias.clone(),
            from: alias.version,
            to: request.to,
            steps: request.steps,
            interval_ms: request.interval_ms,
            max_error_rate: request.max_error_rate,
            min_invocations: request.min_invocations,
            step: 0,
            state: RolloutState::Running,
            reason: None,
            started_at: now,
            updated_at: now,
            window: None,
        };
        let routing = routing_at(&info, &alias);
        if routing.additional.is_none() {
            ended(&mut info, RolloutState::Completed, None);
        }
        self.set_alias(
            name,
            &request.alias,
            Some(&routing),
            RolloutEffect::Record(info.clone()),
        )?;
        info!(function = name, alias = %info.alias, from = info.from, to = info.to, "rollout started");
        let id =
            (info.state == RolloutState::Running).then(|| self.rollouts.start(name, info.clone()));
        Ok((info, id))
    }

    /// `GET /v1/functions/{name}/rollout`: the latest rollout.
    pub fn rollout(&self, name: &str) -> Result<RolloutInfo, ApiError> {
        if self.deployed(name).is_none() {
            return Err(ApiError::no_function(name));
        }
        self.rollouts.latest(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "rollout_not_found",
                format!("`{name}` has had no rollout"),
            )
        })
    }

    /// `DELETE /v1/functions/{name}/rollout`: cancels a running rollout;
    /// its alias goes back to the old version.
    pub async fn cancel_rollout(self: &Arc<Self>, name: &str) -> Result<RolloutInfo, ApiError> {
        let owned = name.to_string();
        self.change(name, "rollout", move |host| {
            let mut info = host.rollout(&owned)?;
            if info.state != RolloutState::Running {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "rollout_not_running",
                    format!("the latest rollout of `{owned}` is {}", info.state.as_str()),
                ));
            }
            ended(
                &mut info,
                RolloutState::Cancelled,
                Some("cancelled by a request".into()),
            );
            host.end_rollout(&owned, &info, info.from)?;
            Ok(info)
        })
        .await
    }

    /// Sets `info`'s alias to `routing` and records `info`, in one
    /// transaction.
    fn record(
        &self,
        name: &str,
        info: &RolloutInfo,
        routing: &AliasRouting,
    ) -> Result<(), ApiError> {
        self.set_alias(
            name,
            &info.alias,
            Some(routing),
            RolloutEffect::Record(info.clone()),
        )?;
        self.rollouts.set(name, info.clone());
        Ok(())
    }

    /// Records an ended rollout with its alias sending everything to
    /// `version`.
    fn end_rollout(&self, name: &str, info: &RolloutInfo, version: u64) -> Result<(), ApiError> {
        let base = self
            .deployed(name)
            .and_then(|d| d.aliases.get(&info.alias).cloned())
            .unwrap_or_else(|| AliasRouting::to(version));
        let routing = AliasRouting {
            version,
            additional: None,
            ..base
        };
        self.record(name, info, &routing)?;
        info!(function = name, alias = %info.alias, state = info.state.as_str(), reason = ?info.reason, "rollout ended");
        Ok(())
    }

    /// Drives rollout `id` of `name` on a task of its own until it ends, is
    /// cancelled or the function is deleted.
    fn drive(self: &Arc<Self>, name: String, id: u64) {
        let host = Arc::clone(self);
        tokio::spawn(async move {
            let Some(deployed) = host.deployed(&name) else {
                return;
            };
            let Some(info) = host.rollouts.driven(&name, id) else {
                return;
            };
            let (Some(from), Some(to)) = (
                deployed.versions.get(&info.from).cloned(),
                deployed.versions.get(&info.to).cloned(),
            ) else {
                return;
            };
            let from_base = Baseline::of(&from);
            let mut to_base = Baseline::of(&to);
            let mut step_start = Instant::now();
            loop {
                tokio::time::sleep(TICK).await;
                let Some(mut info) = host.rollouts.driven(&name, id) else {
                    return;
                };
                let (from_invocations, from_errors) = from_base.since(&from);
                let (to_invocations, to_errors) = to_base.since(&to);
                let window = RolloutWindow {
                    from_invocations,
                    from_errors,
                    to_invocations,
                    to_errors,
                };
                info.window = Some(window);
                host.rollouts.set(&name, info.clone());
                let due = step_start.elapsed() >= Duration::from_millis(info.interval_ms)
                    && to_invocations >= info.min_invocations;
                if !due {
                    continue;
                }
                let guard = host.deploy_lock(&name);
                let _guard = guard.lock().await;
                // Cancelled while waiting for the lock?
                if host.rollouts.driven(&name, id).is_none() {
                    return;
                }
                let worker = Arc::clone(&host);
                let step_name = name.clone();
                let stepped =
                    tokio::task::spawn_blocking(move || worker.step(&step_name, info, &window))
                        .await;
                match stepped {
                    Ok(Ok(true)) => {
                        to_base = Baseline::of(&to);
                        step_start = Instant::now();
                    }
                    Ok(Ok(false)) => return,
                    Ok(Err(e)) => {
                        warn!(function = %name, error = %e.message, "a rollout step failed; retrying");
                    }
                    Err(e) => {
                        warn!(function = %name, error = %e, "a rollout step panicked");
                        return;
                    }
                }
            }
        });
    }

    /// Ends a step: rolls back, completes or moves to the next step.
    /// Returns true if the rollout goes on.
    fn step(
        &self,
        name: &str,
        mut info: RolloutInfo,
        window: &RolloutWindow,
    ) -> Result<bool, ApiError> {
        if let Some(reason) = judge(&info, window) {
            warn!(function = name, reason = %reason, "rollout failed; rolling back");
            ended(&mut info, RolloutState::Failed, Some(reason));
            self.end_rollout(name, &info, info.from)?;
            return Ok(false);
        }
        info.step += 1;
        info.updated_at = now_unix();
        if info.steps[info.step] >= 100 {
            ended(&mut info, RolloutState::Completed, None);
            self.end_rollout(name, &info, info.to)?;
            return Ok(false);
        }
        let base = self
            .deployed(name)
            .and_then(|d| d.aliases.get(&info.alias).cloned())
            .ok_or_else(|| no_alias(name, &info.alias))?;
        self.record(name, &info, &routing_at(&info, &base))?;
        info!(
            function = name,
            step = info.step,
            weight = info.steps[info.step],
            "rollout step"
        );
        Ok(true)
    }

    /// At start: takes the recorded rollouts back, resuming each running
    /// one from its recorded step if both its versions were brought back,
    /// else marking it interrupted with its alias on a version that was.
    /// Call it on a blocking thread; [`Host::resume_rollouts`] starts the
    /// drivers.
    pub(super) fn recover_rollouts(&self) -> anyhow::Result<()> {
        let recorded = lock(&self.registry).rollouts()?;
        for (name, mut info) in recorded {
            if info.state != RolloutState::Running {
                self.rollouts.set(&name, info);
                continue;
            }
            let deployed = self.deployed(&name);
            let has = |v: u64| {
                deployed
                    .as_ref()
                    .is_some_and(|d| d.versions.contains_key(&v))
            };
            if has(info.from) && has(info.to) {
                info!(function = %name, step = info.step, "resuming a rollout");
                self.rollouts.start(&name, info);
                continue;
            }
            let back_to = [info.from, info.to].into_iter().find(|v| has(*v));
            let missing = if has(info.from) { info.to } else { info.from };
            ended(
                &mut info,
                RolloutState::Interrupted,
                Some(format!(
                    "version {missing} could not be brought back after a restart"
                )),
            );
            match back_to {
                Some(version) => {
                    if let Err(e) = self.end_rollout(&name, &info, version) {
                        warn!(function = %name, error = %e.message, "ending an interrupted rollout");
                    }
                }
                None => {
                    lock(&self.registry).write(|w| w.put_rollout(&name, &info))?;
                    self.rollouts.set(&name, info);
                }
            }
        }
        Ok(())
    }

    /// Starts the drivers of the rollouts brought back at start; call it
    /// on the runtime.
    pub fn resume_rollouts(self: &Arc<Self>) {
        for (name, id) in self.rollouts.running() {
            self.drive(name, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(steps: Vec<u32>) -> RolloutRequest {
        RolloutRequest {
            to: 2,
            alias: "live".into(),
            steps,
            interval_ms: 1000,
            max_error_rate: 0.01,
            min_invocations: 0,
        }
    }

    fn info(steps: Vec<u32>, step: usize) -> RolloutInfo {
        RolloutInfo {
            alias: "live".into(),
            from: 1,
            to: 2,
            steps,
            interval_ms: 1000,
            max_error_rate: 0.01,
            min_invocations: 0,
            step,
            state: RolloutState::Running,
            reason: None,
            started_at: 0,
            updated_at: 0,
            window: None,
        }
    }

    #[test]
    fn steps_must_rise_to_100() {
        check_request(&request(vec![5, 25, 50, 100])).unwrap();
        check_request(&request(vec![100])).unwrap();
        for bad in [
            vec![],
            vec![5, 50],
            vec![50, 25, 100],
            vec![0, 100],
            vec![5, 5, 100],
        ] {
            assert_eq!(
                check_request(&request(bad)).unwrap_err().code,
                "invalid_rollout"
            );
        }
        let mut r = request(vec![100]);
        r.max_error_rate = 1.5;
        check_request(&r).unwrap_err();
        r.max_error_rate = 0.0;
        r.interval_ms = 1;
        check_request(&r).unwrap_err();
    }

    #[test]
    fn a_step_routes_its_weight_and_100_is_all_of_it() {
        let base = AliasRouting {
            reserved: Some(4),
            ..AliasRouting::to(1)
        };
        let r = routing_at(&info(vec![5, 100], 0), &base);
        assert_eq!(r.version, 1);
        assert_eq!(
            r.additional,
            Some(AdditionalVersion {
                version: 2,
                weight: 5
            })
        );
        assert_eq!(r.reserved, Some(4));
        let r = routing_at(&info(vec![5, 100], 1), &base);
        assert_eq!((r.version, r.additional), (2, None));
    }

    #[test]
    fn failures_beyond_the_old_rate_fail_the_step() {
        let i = info(vec![5, 100], 0);
        let window = |to_errors, from_errors| RolloutWindow {
            from_invocations: 1000,
            from_errors,
            to_invocations: 100,
            to_errors,
        };
        assert!(judge(&i, &window(0, 0)).is_none());
        // 1% over a 0.5% baseline: 0.5 points, within 1.
        assert!(judge(&i, &window(1, 5)).is_none());
        let reason = judge(&i, &window(20, 0)).unwrap();
        assert!(reason.contains("20 of 100"), "{reason}");
        // No traffic is no failure.
        assert!(judge(&i, &RolloutWindow::default()).is_none());
    }
}
