//! Ahead-of-time compilation of wasm modules for the guest, with a cache
//! of compiled artifacts.
//!
//! The guest has no compiler: the host compiles with Cranelift using the
//! shared `wisp_engine::config()`, and the agent loads the artifact as is.
//! Artifacts are cached by `wisp_images::ArtifactCache` (in memory, and as
//! checked blobs of an image store on disk), keyed by the SHA-256 of the
//! module and an [`ArtifactKey`] naming everything that makes an artifact
//! incompatible: wasmtime's compatibility hash of this engine (its version,
//! configuration and target flags), the host's CPU features and the wisp
//! version. A corrupted entry is rebuilt, and another key is a miss, so a
//! stale artifact is never loaded.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tracing::warn;
use wasmtime::Engine;
use wisp_images::{ArtifactCache, ArtifactKey};

/// Why a module could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The input is neither valid wasm nor valid WAT, or uses a feature that
    /// is disabled.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The module imports something the guest does not provide.
    #[error("unsupported import `{module}::{name}` ({kind}): wisp provides only the {} functions of WASI preview 1", wisp_abi::wasi::MODULE)]
    UnsupportedImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// What kind of item is imported.
        kind: &'static str,
    },
    /// The compiler could not be set up.
    #[error("wasm compiler: {0}")]
    Engine(String),
}

/// Compiles modules for the guest.
pub struct Compiler {
    engine: Engine,
    key: ArtifactKey,
    cache: Option<ArtifactCache>,
    compilations: AtomicU64,
}

/// Feeds wasmtime's compatibility hash into SHA-256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only write is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache directory: `$WISP_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/wisp`, else `~/.cache/wisp`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WISP_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("wisp"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wisp"))
}

/// The guest's CPU features as an artifact key names them.
fn guest_cpu() -> String {
    let cpu = wisp_vmm::guest_cpu_features();
    let features: Vec<&str> = cpu.features.iter().map(String::as_str).collect();
    format!("{} {}", cpu.vendor, features.join(","))
}

/// Cranelift's x86-64 ISA flags, each with the CPU feature it needs.
const ISA_FLAGS: &[(&str, &str)] = &[
    ("has_sse3", "sse3"),
    ("has_cmpxchg16b", "cmpxchg16b"),
    ("has_ssse3", "ssse3"),
    ("has_sse41", "sse4.1"),
    ("has_sse42", "sse4.2"),
    ("has_popcnt", "popcnt"),
    ("has_avx", "avx"),
    ("has_avx2", "avx2"),
    ("has_fma", "fma"),
    ("has_avx_vnni", "avxvnni"),
    ("has_bmi1", "bmi1"),
    ("has_bmi2", "bmi2"),
    ("has_lzcnt", "lzcnt"),
    ("has_avx512f", "avx512f"),
    ("has_avx512vl", "avx512vl"),
    ("has_avx512dq", "avx512dq"),
    ("has_avx512bitalg", "avx512bitalg"),
    ("has_avx512vbmi", "avx512vbmi"),
    ("has_avx512vnni", "avx512vnni"),
];

/// The shared engine configuration for compiling here, for a guest with
/// `cpu`: Cranelift detects the host's features, and every one the guest
/// does not have is turned off, so the agent's check of the artifact
/// (`wisp_abi::cpu`, the same decoder) passes.
fn host_config(cpu: &wisp_snapshot::CpuFeatures) -> wasmtime::Config {
    let mut config = wisp_engine::config();
    if cfg!(target_arch = "x86_64") {
        for (flag, feature) in ISA_FLAGS {
            if !cpu.features.contains(*feature) {
                // SAFETY: turning an ISA extension off only narrows the
                // instructions Cranelift may emit.
                unsafe { config.cranelift_flag_set(flag, "false") };
            }
        }
    }
    config
}

impl Compiler {
    /// A compiler that caches artifacts in an image store at `cache_dir`
    /// (none if `None`, or if the directory cannot be used), with no
    /// in-memory level: for one-shot commands.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Compiler, CompileError> {
        let cache = cache_dir.and_then(|dir| match wisp_images::Store::open(&dir) {
            Ok(store) => Some(ArtifactCache::new(store, 0)),
            Err(e) => {
                warn!(error = %e, "the compile cache is unusable; compiling without it");
                None
            }
        });
        Compiler::with_cache(cache)
    }

    /// A compiler using `cache` (none if `None`).
    pub fn with_cache(cache: Option<ArtifactCache>) -> Result<Compiler, CompileError> {
        let engine = Engine::new(&host_config(wisp_vmm::guest_cpu_features()))
            .map_err(|e| CompileError::Engine(format!("{e:#}")))?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let key = ArtifactKey {
            engine: hex(&h.0.finalize()[..8]),
            cpu: guest_cpu(),
            wisp: env!("CARGO_PKG_VERSION").to_string(),
        };
        Ok(Compiler {
            engine,
            key,
            cache,
            compilations: AtomicU64::new(0),
        })
    }

    /// What this compiler's artifacts are compatible with.
    pub fn artifact_key(&self) -> &ArtifactKey {
        &self.key
    }

    /// Test hook: pretends artifacts are compatible with `key` instead, to
    /// simulate another wasmtime version or CPU. Artifacts cached under a
    /// key that does not describe this compiler will not load in the guest.
    #[doc(hidden)]
    pub fn set_artifact_key(&mut self, key: ArtifactKey) {
        self.key = key;
    }

    /// The cache, if any.
    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// How many modules this compiler has compiled (cache misses included,
    /// hits not).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Checks that `module` is valid binary wasm this engine accepts,
    /// without compiling it.
    pub fn validate(&self, module: &[u8]) -> Result<(), CompileError> {
        wasmtime::Module::validate(&self.engine, module)
            .map_err(|e| CompileError::Invalid(format!("{e:#}")))
    }

    /// Compiles `module` (wasm or WAT) without touching the cache, after
    /// checking that the guest can satisfy its imports.
    pub fn compile(&self, module: &[u8]) -> Result<Vec<u8>, CompileError> {
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let artifact = self
            .engine
            .precompile_module(module)
            .map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        self.check_imports(&artifact)?;
        Ok(artifact)
    }

    fn check_imports(&self, artifact: &[u8]) -> Result<(), CompileError> {
        // SAFETY: `artifact` was produced just now by this engine's
        // `precompile_module`, which is what `deserialize` requires.
        let module = unsafe { wasmtime::Module::deserialize(&self.engine, artifact) }
            .map_err(|e| CompileError::Engine(format!("{e:#}")))?;
        for import in module.imports() {
            let kind = match import.ty() {
                wasmtime::ExternType::Func(_) => "function",
                wasmtime::ExternType::Memory(_) => "memory",
                wasmtime::ExternType::Table(_) => "table",
                wasmtime::ExternType::Global(_) => "global",
                wasmtime::ExternType::Tag(_) => "tag",
            };
            if kind != "function" || !wisp_abi::wasi::provides(import.module(), import.name()) {
                return Err(CompileError::UnsupportedImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                    kind,
                });
            }
        }
        Ok(())
    }

    /// The artifact for `module`, from the cache if a valid entry exists
    /// for this compiler's key, else compiled and cached. Cache failures
    /// never fail the call.
    pub fn load_or_compile(&self, module: &[u8]) -> Result<Vec<u8>, CompileError> {
        let Some(cache) = &self.cache else {
            return self.compile(module);
        };
        let digest = wisp_images::Digest::of(module);
        let lookup = cache.get_or_build(&digest, &self.key, || self.compile(module))?;
        if let Some(problem) = lookup.problem {
            warn!(module = %digest, error = %problem, "compile cache");
        }
        Ok(lookup.artifact.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(module (func (export "_start")))"#;

    #[test]
    fn compiles_wat_and_rejects_garbage() {
        let c = Compiler::new(None).unwrap();
        assert!(!c.compile(WAT.as_bytes()).unwrap().is_empty());
        let err = c.compile(b"not wasm").unwrap_err();
        assert!(matches!(err, CompileError::Invalid(_)), "{err}");
    }

    #[test]
    fn rejects_imports_the_guest_lacks() {
        let c = Compiler::new(None).unwrap();
        let wat = r#"(module (import "env" "now" (func)) (func (export "_start")))"#;
        let err = c.compile(wat.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported import `env::now` (function)"),
            "{err}"
        );
        let wat = r#"(module (import "wasi_snapshot_preview1" "fd_write" (memory 1)) (func (export "_start")))"#;
        assert!(matches!(
            c.compile(wat.as_bytes()),
            Err(CompileError::UnsupportedImport { kind: "memory", .. })
        ));
        let wat = r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#;
        c.compile(wat.as_bytes()).unwrap();
    }

    #[test]
    fn cache_hits_misses_on_another_key_and_survives_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compiler::new(Some(dir.path().to_owned())).unwrap();
        let first = c.load_or_compile(WAT.as_bytes()).unwrap();
        assert_eq!(c.load_or_compile(WAT.as_bytes()).unwrap(), first);
        assert_eq!(c.compilations(), 1);
        // Another wasmtime or CPU: a miss, compiled again.
        let mut other = Compiler::new(Some(dir.path().to_owned())).unwrap();
        other.set_artifact_key(ArtifactKey {
            cpu: "GenuineIntel sse2".into(),
            ..c.artifact_key().clone()
        });
        other.load_or_compile(WAT.as_bytes()).unwrap();
        assert_eq!(other.compilations(), 1);
        // Flip a byte of every stored blob: rejected and rebuilt.
        let store = wisp_images::Store::open(dir.path()).unwrap();
        for blob in store.blobs().list().unwrap() {
            let path = store.blobs().path(&blob.digest);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[100] ^= 0xff;
            std::fs::write(&path, &bytes).unwrap();
        }
        let again = Compiler::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(again.load_or_compile(WAT.as_bytes()).unwrap(), first);
        assert_eq!(again.compilations(), 1);
        let hit = Compiler::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(hit.load_or_compile(WAT.as_bytes()).unwrap(), first);
        assert_eq!(hit.compilations(), 0);
    }
}
