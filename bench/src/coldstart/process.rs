//! A process per invocation: how the alternatives run (native fork/exec,
//! `wasmtime run`, a `crun` container, and wisp's own CLI), each checked
//! for the function's exact output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::series::{measure, Series, Start};

/// How to run one invocation as a process.
#[derive(Clone, Debug)]
pub struct ProcessRun {
    /// The row's label, e.g. `native fork/exec`.
    pub scenario: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// A file given as stdin (`/dev/null` if none): a file rather than a
    /// pipe, so no writer thread takes part in the timing.
    pub stdin: Option<PathBuf>,
    /// What it must print on stdout.
    pub expected: Vec<u8>,
    /// Replaced in `args` by a fresh number per run (container ids).
    pub unique_placeholder: Option<&'static str>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl ProcessRun {
    /// A run of `program args…`.
    pub fn new(scenario: &str, program: impl Into<PathBuf>, args: &[&str]) -> ProcessRun {
        ProcessRun {
            scenario: scenario.to_string(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
            expected: Vec::new(),
            unique_placeholder: None,
            env: Vec::new(),
        }
    }

    /// Runs it once; `Err` describes a wrong answer or a failure.
    pub fn once(&self, run: usize) -> Result<(), String> {
        let stdin = match &self.stdin {
            Some(path) => Stdio::from(open(path)?),
            None => Stdio::null(),
        };
        let args = self.args.iter().map(|a| match self.unique_placeholder {
            Some(p) => a.replace(p, &format!("{}-{run}", std::process::id())),
            None => a.clone(),
        });
        let output = Command::new(&self.program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: {e}", self.program.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} exited with {}: {}",
                self.program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ));
        }
        if output.stdout != self.expected {
            return Err(format!(
                "{} printed {} bytes, not the {} expected: {:?}",
                self.program.display(),
                output.stdout.len(),
                self.expected.len(),
                String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(80)])
            ));
        }
        Ok(())
    }

    /// Runs it `runs` times; fails early, with the reason, if the first run
    /// does not work (a missing tool should not produce a row of errors).
    pub fn series(&self, function: &str, runs: usize) -> Result<Series, String> {
        self.once(0)?;
        let mut n = 0;
        Ok(measure(&self.scenario, function, runs, || {
            n += 1;
            self.once(n).map(|()| Start::None)
        }))
    }
}

fn open(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `name` on `PATH`, or in cargo's install directory.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_output_and_exit_status() {
        let mut echo = ProcessRun::new("echo", "/bin/echo", &["hello, world!"]);
        echo.expected = b"hello, world!\n".to_vec();
        let series = echo.series("hello", 3).unwrap();
        assert_eq!(series.samples.len(), 3);
        assert_eq!(series.failures(), 0);

        echo.expected = b"something else\n".to_vec();
        assert!(echo.once(0).unwrap_err().contains("not the 15 expected"));
        let fail = ProcessRun::new("false", "/bin/false", &[]);
        assert!(fail.series("f", 3).unwrap_err().contains("exited with"));
        let missing = ProcessRun::new("x", "/nonexistent/tool", &[]);
        assert!(missing.once(0).unwrap_err().contains("/nonexistent/tool"));
    }

    #[test]
    fn stdin_comes_from_the_file_and_ids_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"payload").unwrap();
        let mut cat = ProcessRun::new("cat", "/bin/cat", &[]);
        cat.stdin = Some(input);
        cat.expected = b"payload".to_vec();
        cat.once(0).unwrap();

        let mut id = ProcessRun::new("echo", "/bin/echo", &["run-ID"]);
        id.unique_placeholder = Some("ID");
        id.expected = format!("run-{}-7\n", std::process::id()).into_bytes();
        id.once(7).unwrap();
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-here").is_none());
    }
}
