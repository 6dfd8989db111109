//! Language runtimes: Python and JavaScript handlers on an interpreter
//! image (docs/RUNTIMES.md).
//!
//! A runtime is an image in the store (`scripts/build-runtimes` makes them)
//! whose module is an interpreter and whose files hold a bootstrap that
//! imports the handler, then reads one event from stdin. A function on a
//! runtime boots that bootstrap with the handler named in its environment
//! and is snapshotted at its first read (`VmConfig::run_to_first_read`), so
//! interpreter start-up and imports happen once per deploy. Each request's
//! stdin is then one line of JSON context followed by the body.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use wisp_images::{Digest, FileKind, FileTree, Limits, Unpacker};
use wisp_vmm::Invocation;

pub mod local;

/// Where a function's code is in the guest (read-only, first on the
/// import path), as AWS Lambda puts it.
pub const TASK_ROOT: &str = "/var/task";
/// The manifest annotation of a handler's image (`wisp image build
/// --runtime`) naming its runtime: a deploy of the image without a
/// `runtime` runs it on this one.
pub const RUNTIME_ANNOTATION: &str = "dev.wisp.runtime";
/// The manifest annotation of a handler's image naming its handler.
pub const HANDLER_ANNOTATION: &str = "dev.wisp.handler";
/// The bootstrap's exit status when the handler raised: stdout holds the
/// error document.
pub const EXIT_HANDLER_ERROR: i32 = 70;
/// The bootstrap's exit status when the handler could not be loaded.
pub const EXIT_LOAD_ERROR: i32 = 71;

/// A language runtime wisp knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// Its name in deploys (`python3.12`).
    pub name: &'static str,
    /// The image `scripts/build-runtimes` imports it as.
    pub image: &'static str,
    /// The interpreter's command line: argv[0] and the bootstrap.
    pub argv: &'static [&'static str],
    /// What a handler name looks like, for messages.
    pub handler_example: &'static str,
}

/// Every runtime, by name.
pub const RUNTIMES: &[Runtime] = &[
    Runtime {
        name: "python3.12",
        image: "wisp/python:3.12",
        argv: &["python3", "/var/runtime/bootstrap.py"],
        handler_example: "app.handler (def handler(event, context) in app.py)",
    },
    Runtime {
        name: "javascript",
        image: "wisp/javascript:quickjs-ng-0.16.2",
        argv: &["wisp-js", "/var/runtime/bootstrap.js"],
        handler_example: "index.handler (export function handler in index.mjs or index.js)",
    },
];

/// Why a runtime and handler were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// No runtime has that name.
    #[error("unknown runtime `{0}`: use one of {names}", names = names())]
    Unknown(String),
    /// The handler is not `MODULE.FUNCTION`.
    #[error("handler `{handler}`: expected MODULE.FUNCTION, e.g. {example}")]
    BadHandler {
        /// The handler as given.
        handler: String,
        /// What one looks like for the runtime.
        example: &'static str,
    },
}

fn names() -> String {
    RUNTIMES
        .iter()
        .map(|r| format!("`{}`", r.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Runtime {
    /// The runtime called `name`.
    pub fn find(name: &str) -> Result<&'static Runtime, RuntimeError> {
        RUNTIMES
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| RuntimeError::Unknown(name.to_string()))
    }

    /// Checks the form of `handler`: dotted names of letters, digits, `_`
    /// and (for file names) `-`, at least two. Whether it imports is the
    /// deploy's boot to find out.
    pub fn check_handler(&self, handler: &str) -> Result<(), RuntimeError> {
        let part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let parts: Vec<&str> = handler.split('.').collect();
        if handler.len() <= 255 && parts.len() >= 2 && parts.iter().all(|p| part(p)) {
            Ok(())
        } else {
            Err(RuntimeError::BadHandler {
                handler: handler.to_string(),
                example: self.handler_example,
            })
        }
    }

    /// The invocation the bootstrap boots with: the interpreter's command
    /// line, the function's environment and the handler.
    pub fn boot_invocation(&self, handler: &str, env: &BTreeMap<String, String>) -> Invocation {
        let mut vars: Vec<Vec<u8>> = env
            .iter()
            .filter(|(k, _)| !k.starts_with("WISP_"))
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect();
        vars.push(format!("WISP_HANDLER={handler}").into_bytes());
        vars.push(format!("WISP_TASK_ROOT={TASK_ROOT}").into_bytes());
        Invocation {
            args: self.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: vars,
        }
    }
}

/// `code` placed at [`TASK_ROOT`]: the layer a function's image adds on
/// top of its runtime's.
pub fn code_layer(code: FileTree) -> FileTree {
    let root = PathBuf::from(TASK_ROOT.trim_start_matches('/'));
    let mut tree = FileTree::new();
    let mut parent = PathBuf::new();
    for part in root.components() {
        parent.push(part);
        tree.insert(parent.clone(), FileKind::Dir);
    }
    for entry in code.into_entries() {
        tree.insert(root.join(&entry.path), entry.kind);
    }
    tree
}

/// A handler's code as the tar a deploy sends: the files of directory
/// `path`, or the one file `path` (under its own name).
pub fn code_tar(path: &Path) -> Result<Vec<u8>, wisp_images::Error> {
    let tree = if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        let name = path.file_name().unwrap_or(path.as_os_str());
        let data = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let mut tree = FileTree::new();
        tree.insert(PathBuf::from(name), FileKind::File(data, 0o644));
        tree
    } else {
        FileTree::from_dir(path, &Limits::default())?
    };
    let mut tar = Vec::new();
    tree.write_tar(&mut tar).map_err(|e| io_error(path, e))?;
    Ok(tar)
}

fn io_error(path: &Path, source: std::io::Error) -> wisp_images::Error {
    wisp_images::Error::Io {
        context: format!("reading {}", path.display()),
        source,
    }
}

/// The files of a code tar (gzip-compressed if it starts as gzip does),
/// checked as an image layer is and within `limits`.
pub fn unpack_code(tar: &[u8], limits: Limits) -> Result<FileTree, wisp_images::Error> {
    let gzip = tar.starts_with(&[0x1f, 0x8b]);
    let mut unpacker = Unpacker::new(limits);
    unpacker.apply(&Digest::of(tar), tar, gzip)?;
    Ok(unpacker.into_tree())
}

/// What the bootstrap reads before the body: who is asking and until when.
#[derive(Debug, Serialize)]
pub struct RequestContext<'a> {
    /// A unique id of this request.
    pub request_id: &'a str,
    /// The function's name.
    pub function_name: &'a str,
    /// Its version.
    pub function_version: u64,
    /// Its guest memory.
    pub memory_limit_in_mb: u32,
    /// When the invocation times out (Unix milliseconds), if it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

impl RequestContext<'_> {
    /// The request's stdin: the context as one line of JSON, then `body`.
    pub fn stdin(&self, body: &[u8]) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("serialisable");
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }
}

/// The Unix time in milliseconds `timeout` from now.
pub fn deadline_ms(timeout: Duration) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| (d + timeout).as_millis() as u64)
}

/// A new request id, unique within this host: a random per-process
/// prefix (from the standard library's hash keys, which the OS seeds) and
/// a counter, shaped like a UUID.
pub fn request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        prefix >> 32,
        (prefix >> 16) & 0xffff,
        prefix & 0xffff,
        (n >> 48) & 0xffff,
        n & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_found_by_name() {
        assert_eq!(
            Runtime::find("python3.12").unwrap().image,
            "wisp/python:3.12"
        );
        let err = Runtime::find("cobol").unwrap_err();
        assert!(err.to_string().contains("`python3.12`"), "{err}");
    }

    #[test]
    fn handlers_must_name_a_function_in_a_module() {
        let python = Runtime::find("python3.12").unwrap();
        python.check_handler("app.handler").unwrap();
        python.check_handler("pkg.sub.handler").unwrap();
        for bad in [
            "handler", "app.", ".handler", "app..h", "a/b.h", "app.h()", "",
        ] {
            assert!(python.check_handler(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_boot_names_the_handler_and_keeps_the_user_out_of_wisp_variables() {
        let python = Runtime::find("python3.12").unwrap();
        let env = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("WISP_HANDLER".to_string(), "evil.x".to_string()),
        ]);
        let inv = python.boot_invocation("app.handler", &env);
        assert_eq!(inv.args[1], b"/var/runtime/bootstrap.py");
        let env: Vec<String> = inv
            .env
            .iter()
            .map(|v| String::from_utf8(v.clone()).unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "A=1",
                "WISP_HANDLER=app.handler",
                "WISP_TASK_ROOT=/var/task"
            ]
        );
    }

    #[test]
    fn code_goes_under_the_task_root() {
        let mut code = FileTree::new();
        code.insert("app.py".into(), FileKind::File(b"x".to_vec(), 0o644));
        let layer = code_layer(code);
        assert!(matches!(
            layer.get("var/task".as_ref()),
            Some(FileKind::Dir)
        ));
        assert!(matches!(
            layer.get("var/task/app.py".as_ref()),
            Some(FileKind::File(..))
        ));
    }

    #[test]
    fn the_context_is_one_line_before_the_body() {
        let stdin = RequestContext {
            request_id: "r",
            function_name: "f",
            function_version: 2,
            memory_limit_in_mb: 128,
            deadline_ms: None,
        }
        .stdin(b"{\"a\":\n1}");
        let text = String::from_utf8(stdin).unwrap();
        let (line, body) = text.split_once('\n').unwrap();
        assert_eq!(
            line,
            r#"{"request_id":"r","function_name":"f","function_version":2,"memory_limit_in_mb":128}"#
        );
        assert_eq!(body, "{\"a\":\n1}");
        assert_ne!(request_id(), request_id());
    }
}
