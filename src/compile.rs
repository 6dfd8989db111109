//! Ahead-of-time compilation of wasm modules for the guest, with an on-disk
//! cache keyed by content.
//!
//! The guest has no compiler: the host compiles with Cranelift using the
//! shared `wisp_engine::config()`, and the agent loads the artifact as is.
//! Cache entries are named by the SHA-256 of the module and of everything
//! that makes an artifact incompatible (wasmtime version, configuration,
//! target CPU features), and carry a digest of their own bytes, so a
//! corrupted or stale entry is recompiled rather than used.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;

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
    fingerprint: String,
    cache_dir: Option<PathBuf>,
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

impl Compiler {
    /// A compiler that caches artifacts in `cache_dir` (none if `None`).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Compiler, CompileError> {
        let engine = Engine::new(&wisp_engine::config())
            .map_err(|e| CompileError::Engine(format!("{e:#}")))?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = hex(&h.0.finalize()[..8]);
        Ok(Compiler {
            engine,
            fingerprint,
            cache_dir,
        })
    }

    /// Compiles `module` (wasm or WAT) without touching the cache, after
    /// checking that the guest can satisfy its imports.
    pub fn compile(&self, module: &[u8]) -> Result<Vec<u8>, CompileError> {
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

    fn cache_path(&self, module: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let digest = hex(&Sha256::digest(module));
        Some(dir.join(format!("{digest}-{}.cwasm", self.fingerprint)))
    }

    /// The artifact for `module`, from the cache if a valid entry exists,
    /// else compiled and cached. Cache failures never fail the call.
    pub fn load_or_compile(&self, module: &[u8]) -> Result<Vec<u8>, CompileError> {
        let path = self.cache_path(module);
        if let Some(artifact) = path.as_deref().and_then(read_entry) {
            return Ok(artifact);
        }
        let artifact = self.compile(module)?;
        if let Some(path) = path {
            // Best effort: a read-only or full disk only costs a recompile.
            let _ = write_entry(&path, &artifact);
        }
        Ok(artifact)
    }
}

/// Reads a cache entry: the artifact followed by its SHA-256.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = fs::read(path).ok()?;
    let split = bytes.len().checked_sub(32)?;
    if Sha256::digest(&bytes[..split]).as_slice() != &bytes[split..] {
        let _ = fs::remove_file(path);
        return None;
    }
    bytes.truncate(split);
    Some(bytes)
}

/// Writes a cache entry atomically (temporary file, fsync, rename).
fn write_entry(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(artifact)?;
    tmp.write_all(&Sha256::digest(artifact))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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
        assert!(c.compile(wat.as_bytes()).is_ok());
    }

    #[test]
    fn cache_hits_and_survives_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compiler::new(Some(dir.path().to_owned())).unwrap();
        let first = c.load_or_compile(WAT.as_bytes()).unwrap();
        let path = c.cache_path(WAT.as_bytes()).unwrap();
        assert!(path.exists());
        assert_eq!(read_entry(&path).unwrap(), first);
        // Flip a byte: the entry is rejected, removed and rebuilt.
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(read_entry(&path).is_none());
        assert_eq!(c.load_or_compile(WAT.as_bytes()).unwrap(), first);
        assert!(read_entry(&path).is_some());
    }
}
