//! Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an invocation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// Function name.
    pub function: String,
    /// `cold` or `warm`.
    pub start: &'static str,
}

/// Labels of an error or a rejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Function name.
    pub function: String,
    /// The stable error code.
    pub kind: &'static str,
}

/// Labels naming a function.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    /// Function name.
    pub function: String,
}

/// Labels of an invocation by the version that ran it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Function name.
    pub function: String,
    /// The version.
    pub version: String,
    /// The alias it went through; empty when the request named a version.
    pub alias: String,
    /// `ok`, `nonzero_exit` or the error's stable code.
    pub outcome: &'static str,
}

/// Labels of a version's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionGaugeLabels {
    /// Function name.
    pub function: String,
    /// The version.
    pub version: String,
}

/// Where an invocation was routed, for [`Metrics::ran_version`].
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    /// The version that ran.
    pub version: u64,
    /// The alias, unless the request named a version.
    pub alias: Option<&'a str>,
}

/// Labels of a host memory gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemoryLabels {
    /// What is measured.
    pub kind: &'static str,
}

type HistogramFamily = Family<FunctionLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s, doubling.
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Invocations that ran, by start kind.
    pub invocations: Family<InvocationLabels, Counter>,
    /// Failed invocations, by error code.
    pub errors: Family<KindLabels, Counter>,
    /// Refused requests, by reason.
    pub rejections: Family<KindLabels, Counter>,
    /// End-to-end invocation latency.
    pub latency: HistogramFamily,
    /// Ready instances.
    pub ready: Family<FunctionLabels, Gauge>,
    /// Busy instances.
    pub busy: Family<FunctionLabels, Gauge>,
    /// Host memory: budget used and limit, and the daemon's resident size.
    pub memory: Family<MemoryLabels, Gauge>,
    /// Invocations that ran, by version, alias and outcome.
    pub version_invocations: Family<VersionLabels, Counter>,
    /// Ready instances of each version.
    pub version_ready: Family<VersionGaugeLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wisp");
        let invocations = Family::default();
        let errors = Family::default();
        let rejections = Family::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        let ready = Family::default();
        let busy = Family::default();
        let memory = Family::default();
        let version_invocations = Family::default();
        let version_ready = Family::default();
        registry.register(
            "invocations",
            "Invocations that ran (any outcome), by cold or warm start",
            invocations.clone(),
        );
        registry.register("errors", "Failed invocations by kind", errors.clone());
        registry.register(
            "rejections",
            "Requests refused with 429, by reason",
            rejections.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Invocation latency from arrival to response, queueing included",
            latency.clone(),
        );
        registry.register("ready_instances", "Instances ready", ready.clone());
        registry.register("busy_instances", "Instances serving", busy.clone());
        registry.register("host_memory_bytes", "Host memory", memory.clone());
        registry.register(
            "version_invocations",
            "Invocations that ran, by version, the alias they went through and outcome",
            version_invocations.clone(),
        );
        registry.register(
            "version_ready_instances",
            "Instances ready, by version",
            version_ready.clone(),
        );
        Metrics {
            registry,
            invocations,
            errors,
            rejections,
            latency,
            ready,
            busy,
            memory,
            version_invocations,
            version_ready,
        }
    }
}

impl Metrics {
    /// Counts an invocation of `function` that ran (any outcome).
    pub fn ran(&self, function: &str, cold: bool, latency: std::time::Duration) {
        self.invocations
            .get_or_create(&InvocationLabels {
                function: function.to_string(),
                start: if cold { "cold" } else { "warm" },
            })
            .inc();
        self.latency
            .get_or_create(&FunctionLabels {
                function: function.to_string(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts an invocation of `function` that ran, by where it was routed
    /// and how it ended.
    pub fn ran_version(&self, function: &str, routed: Routed<'_>, outcome: &'static str) {
        self.version_invocations
            .get_or_create(&VersionLabels {
                function: function.to_string(),
                version: routed.version.to_string(),
                alias: routed.alias.unwrap_or_default().to_string(),
                outcome,
            })
            .inc();
    }

    /// Counts a failed invocation of `function` by its error code.
    pub fn failed(&self, function: &str, code: &'static str) {
        self.errors
            .get_or_create(&KindLabels {
                function: function.to_string(),
                kind: code,
            })
            .inc();
    }

    /// Counts a request for `function` refused for capacity.
    pub fn rejected(&self, function: &str, code: &'static str) {
        self.rejections
            .get_or_create(&KindLabels {
                function: function.to_string(),
                kind: code,
            })
            .inc();
    }

    /// Sets the gauges: instances of each function, the budget, the
    /// daemon's resident size.
    pub fn refresh(
        &self,
        functions: &[std::sync::Arc<super::function::Function>],
        budget: &super::budget::MemoryBudget,
    ) {
        // A function's gauges sum its versions.
        let mut per_function: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
        for f in functions {
            let sums = per_function.entry(&f.name).or_default();
            sums.0 += f.pool.ready() as i64;
            sums.1 += f.pool.busy() as i64;
            self.version_ready
                .get_or_create(&VersionGaugeLabels {
                    function: f.name.clone(),
                    version: f.version.to_string(),
                })
                .set(f.pool.ready() as i64);
        }
        for (name, (ready, busy)) in per_function {
            let labels = FunctionLabels {
                function: name.to_string(),
            };
            self.ready.get_or_create(&labels).set(ready);
            self.busy.get_or_create(&labels).set(busy);
        }
        let gauge = |kind, value: u64| {
            self.memory
                .get_or_create(&MemoryLabels { kind })
                .set(value as i64)
        };
        gauge("budget_used", budget.used());
        gauge("budget_limit", budget.limit());
        gauge("resident", resident_bytes());
    }

    /// Drops the per-function gauges of a deleted function.
    pub fn forget(&self, function: &str) {
        let labels = FunctionLabels {
            function: function.to_string(),
        };
        self.ready.remove(&labels);
        self.busy.remove(&labels);
    }

    /// Drops the gauges of a deleted version.
    pub fn forget_version(&self, function: &str, version: u64) {
        self.version_ready.remove(&VersionGaugeLabels {
            function: function.to_string(),
            version: version.to_string(),
        });
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// This process's resident set size, from /proc/self/statm.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
