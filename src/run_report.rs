//! `wisp run --report FILE.json`: what CI keeps of a run. The schema is
//! `docs/run-report.schema.json` (described in the README, "Running a
//! module"); a test validates reports of every ending against it.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// The report's `format` value; a new value means a change that breaks
/// readers (fields are only ever added within one).
pub const FORMAT: &str = "wisp-run-report/1";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The module exited (`proc_exit`, or returned from `_start`).
    Exit,
    /// A wasm trap.
    Trap,
    /// The `--timeout` passed.
    Timeout,
    /// The module needed more memory than the VM has.
    OutOfMemory,
    /// The module wrote more than `--max-output`.
    OutputLimit,
    /// The guest broke down: a CPU exception, the agent panicking, or a
    /// violation of the host↔guest protocol.
    GuestFault,
    /// The module is not one wisp can run (not wasm, an import wisp does
    /// not provide, no `_start`); it never ran.
    InvalidModule,
    /// Anything else: bad options, an unreadable module, a host failure.
    Error,
}

/// `wisp run`'s exit status for a wasm trap, as `wasmtime run` uses (128 +
/// SIGABRT).
pub const EXIT_TRAP: u8 = 134;
/// `wisp run`'s exit status for a timeout, as timeout(1) uses.
pub const EXIT_TIMEOUT: u8 = 124;
/// `wisp run`'s exit status for every other failure.
pub const EXIT_FAILURE: u8 = 1;
/// The highest exit code WASI preview 1 lets a module pass through, as
/// `wasmtime run` enforces it: 126 and up belong to the shell (not
/// executable, not found, killed by a signal), and a code a status cannot
/// hold (256 is 0 modulo 256) must never read as success.
pub const MAX_EXIT_CODE: u32 = 125;

/// `wisp run`'s exit status for a module that exited with `code`: the code
/// itself, or 1 (as `wasmtime run`) if WASI does not allow it.
pub fn exit_status(code: u32) -> u8 {
    match u8::try_from(code) {
        Ok(status) if code <= MAX_EXIT_CODE => status,
        _ => EXIT_FAILURE,
    }
}

impl Ending {
    /// How a run that the VM ended with `error` ended.
    pub fn of_error(error: &wisp_vmm::Error) -> Ending {
        use wisp_vmm::Error;
        match error {
            Error::Timeout(_) => Ending::Timeout,
            Error::OutOfMemory(_) => Ending::OutOfMemory,
            Error::OutputLimit(_) => Ending::OutputLimit,
            Error::Module(_) => Ending::InvalidModule,
            Error::GuestFault { .. }
            | Error::TripleFault
            | Error::AgentPanic(_)
            | Error::Protocol(_) => Ending::GuestFault,
            _ => Ending::Error,
        }
    }

    /// `wisp run`'s exit status for a run that ended so (an `Exit`'s is
    /// [`exit_status`]).
    pub fn status(self) -> u8 {
        match self {
            Ending::Exit => 0,
            Ending::Trap => EXIT_TRAP,
            Ending::Timeout => EXIT_TIMEOUT,
            _ => EXIT_FAILURE,
        }
    }
}

/// How the run's VM started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Restored from `wisp run`'s snapshot cache.
    Cached,
    /// Booted, its snapshot stored in the cache, and restored from it.
    Created,
    /// As `Created`, replacing a cache entry that was unusable.
    Rebuilt,
    /// Booted, without the snapshot cache (`--no-cache`, no cache
    /// directory, or the cache could not store it).
    Fresh,
    /// Restored from `--snapshot DIR`.
    Snapshot,
}

/// One run, as written to the report file.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// The module's path as given (or the `--snapshot` directory).
    pub module: Option<String>,
    /// How the run ended.
    pub ended: Ending,
    /// The module's exit code, as WASI passed it (`ended` = `exit` only).
    pub exit_code: Option<u32>,
    /// `wisp run`'s own exit status.
    pub status: u8,
    /// The trap's message (with the wasm backtrace), or the error.
    pub message: Option<String>,
    /// From wisp's start to the end of the run, in milliseconds.
    pub wall_time_ms: f64,
    /// Guest memory in use at the end of the run, which never shrinks
    /// during one: its peak (`None` if no VM ran). See
    /// [`wisp_vmm::Vm::memory_in_use`].
    pub peak_memory_bytes: Option<u64>,
    /// Bytes the module wrote to stdout (up to `--max-output`).
    pub stdout_bytes: u64,
    /// Bytes the module wrote to stderr.
    pub stderr_bytes: u64,
    /// How the VM started (`None` if none did).
    pub start: Option<Start>,
}

impl RunReport {
    /// Writes the report to `path` atomically: a temporary file in the same
    /// directory, renamed over `path` once complete, so a reader never sees
    /// half of one.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".wisp-report")
            .tempfile_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, self)?;
        tmp.write_all(b"\n")?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_beyond_wasi_never_read_as_success() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(42), 42);
        assert_eq!(exit_status(125), 125);
        for code in [126, 255, 256, 512, 65_536, u32::MAX] {
            assert_eq!(exit_status(code), EXIT_FAILURE, "{code}");
        }
    }

    #[test]
    fn every_vm_error_has_an_ending() {
        use std::time::Duration;
        use wisp_vmm::Error;
        let cases = [
            (Error::Timeout(Duration::ZERO), Ending::Timeout),
            (Error::OutOfMemory("oom".into()), Ending::OutOfMemory),
            (Error::OutputLimit(1), Ending::OutputLimit),
            (Error::Module("no `_start`".into()), Ending::InvalidModule),
            (Error::TripleFault, Ending::GuestFault),
            (Error::AgentPanic("panic".into()), Ending::GuestFault),
            (
                Error::GuestFault {
                    vector: 14,
                    name: "#PF",
                    error_code: 0,
                    rip: 0,
                    fault_addr: Some(0),
                },
                Ending::GuestFault,
            ),
            (
                Error::Protocol(wisp_vmm::ProtocolError::Halted),
                Ending::GuestFault,
            ),
            (
                Error::EndedDuringInit {
                    outcome: wisp_vmm::Outcome::Exited(3),
                    stderr: String::new(),
                },
                Ending::Error,
            ),
            (Error::NotRestored("be reset"), Ending::Error),
        ];
        for (error, ending) in cases {
            assert_eq!(Ending::of_error(&error), ending, "{error}");
        }
        assert_eq!(Ending::Timeout.status(), EXIT_TIMEOUT);
        assert_eq!(Ending::Trap.status(), EXIT_TRAP);
        assert_eq!(Ending::GuestFault.status(), EXIT_FAILURE);
    }

    #[test]
    fn written_whole_with_snake_case_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "old").unwrap();
        let report = RunReport {
            format: FORMAT,
            module: Some("m.wasm".into()),
            ended: Ending::OutOfMemory,
            exit_code: None,
            status: 1,
            message: Some("out of memory".into()),
            wall_time_ms: 1.5,
            peak_memory_bytes: Some(4096),
            stdout_bytes: 3,
            stderr_bytes: 0,
            start: Some(Start::Cached),
        };
        report.write(&path).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["ended"], "out_of_memory");
        assert_eq!(back["start"], "cached");
        assert_eq!(back["exit_code"], serde_json::Value::Null);
        // Only the report is left: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
