//! One module per `wisp` subcommand, plus the options they share.

pub mod client;
pub mod image;
pub mod run;
pub mod run_handler;
pub mod serve;
pub mod snapshot;
pub mod teardown;
pub mod versions;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use wisp::compile::{default_cache_dir, Compiler};
use wisp::units::parse_size;
use wisp_vmm::{Files, FilesBuilder};

/// How a module is compiled and the VM it boots in.
#[derive(Args, Clone)]
pub struct VmArgs {
    /// Guest memory, e.g. `64M`, `1G` (a multiple of 2 MiB) [default: 128M].
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Do not read or write the caches: compiled modules and, for `wisp
    /// run`, ready snapshots.
    #[arg(long)]
    pub no_cache: bool,
    /// Give the module a read-only copy of host directory HOST at GUEST
    /// (an absolute guest path; default: HOST itself if absolute). Its
    /// files are placed in guest memory; `/tmp` is always a writable,
    /// empty scratch directory.
    #[arg(long = "files", value_name = "HOST[::GUEST]")]
    pub files: Vec<String>,
}

/// Guest memory when `--memory` is not given.
pub(crate) const DEFAULT_MEMORY: u64 = 128 << 20;

impl VmArgs {
    /// The guest memory size asked for.
    pub fn memory(&self) -> u64 {
        self.memory.unwrap_or(DEFAULT_MEMORY)
    }

    /// The `--files` directories, read and encoded for the guest.
    pub fn files(&self) -> Result<Files> {
        Ok(self.files_builder()?.build())
    }

    /// The `--files` directories, read, for more mounts to be added.
    pub fn files_builder(&self) -> Result<FilesBuilder> {
        let mut builder = FilesBuilder::new();
        for spec in &self.files {
            let (host, guest) = match spec.split_once("::") {
                Some((host, guest)) => (host, guest),
                None if spec.starts_with('/') => (spec.as_str(), spec.as_str()),
                None => bail!("--files {spec}: give HOST::GUEST for a relative host path"),
            };
            builder
                .host_dir(Path::new(host), guest)
                .with_context(|| format!("--files {spec}"))?;
        }
        Ok(builder)
    }

    /// Reads `module` and compiles it for the guest (or takes it from the
    /// cache).
    pub fn compile(&self, module: &Path) -> Result<Vec<u8>> {
        let bytes =
            std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
        self.compile_bytes(&bytes)
    }

    /// Compiles a module's bytes for the guest (or takes it from the
    /// cache).
    pub fn compile_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let cache = if self.no_cache {
            None
        } else {
            default_cache_dir()
        };
        Ok(Compiler::new(cache)?.load_or_compile(bytes)?)
    }
}

/// `--env` entries as `KEY=VALUE` bytes: `NAME=VALUE` as given, `NAME` from
/// the host's environment.
pub fn env_entries(specs: &[String]) -> Result<Vec<Vec<u8>>> {
    specs
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some(("", _)) => bail!("--env `{spec}`: empty variable name"),
            Some(_) => Ok(spec.clone().into_bytes()),
            None => {
                let value = std::env::var(spec)
                    .with_context(|| format!("--env {spec}: not set on the host"))?;
                Ok(format!("{spec}={value}").into_bytes())
            }
        })
        .collect()
}

/// `argv` for a module: its name, then the arguments.
pub fn argv(name: &str, args: &[String]) -> Vec<Vec<u8>> {
    std::iter::once(name)
        .chain(args.iter().map(String::as_str))
        .map(|a| a.as_bytes().to_vec())
        .collect()
}

/// A duration in milliseconds for `--timings`.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The name a module path is known by (`argv[0]`).
pub fn module_name(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
