//! What the shim reads from a bundle's OCI runtime spec (`config.json`)
//! and how it turns it into one `wisp run` command line.
//!
//! Only the fields the shim honours are parsed: the process's args, env
//! and cwd, the root, the mounts and the annotations. Everything else
//! (namespaces, cgroups, capabilities, seccomp) describes a Linux process
//! the shim never starts: the module runs in a micro-VM whose only view
//! of the host is what the command line hands it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::ShimError;

/// The CRI annotation that marks a pod's sandbox ("pause") container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The parts of an OCI runtime spec the shim uses.
#[derive(Debug, Default, Deserialize)]
pub struct Spec {
    /// The process to run; for wisp, args[0] names the module.
    #[serde(default)]
    pub process: Option<Process>,
    /// The root filesystem, relative to the bundle unless absolute.
    #[serde(default)]
    pub root: Option<Root>,
    /// Filesystems to mount; bind mounts of directories become preopens.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Annotations, for the CRI's container type.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// `process` of a runtime spec.
#[derive(Debug, Default, Deserialize)]
pub struct Process {
    /// args[0] is the module, the rest its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// `NAME=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory, against which a relative args[0] resolves.
    #[serde(default)]
    pub cwd: String,
    /// Whether a terminal was asked for (unsupported).
    #[serde(default)]
    pub terminal: bool,
}

/// `root` of a runtime spec.
#[derive(Debug, Default, Deserialize)]
pub struct Root {
    /// The root filesystem's path.
    pub path: String,
}

/// One entry of `mounts`.
#[derive(Debug, Default, Deserialize)]
pub struct Mount {
    /// Where it appears in the container.
    pub destination: String,
    /// The filesystem type (`bind`, `proc`, `tmpfs`, ...).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The host path of a bind mount.
    #[serde(default)]
    pub source: Option<String>,
    /// Mount options (`rbind`, `ro`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

impl Spec {
    /// Reads `bundle/config.json`.
    pub fn load(bundle: &Path) -> Result<Spec, ShimError> {
        let path = bundle.join("config.json");
        let bytes = std::fs::read(&path).map_err(|source| ShimError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(ShimError::Spec)
    }

    /// Whether this is a pod's sandbox container, which has no module:
    /// the shim keeps it "running" until it is killed, as the pause
    /// process would.
    pub fn is_sandbox(&self) -> bool {
        self.annotations.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox")
    }

    /// The root filesystem's host path.
    pub fn rootfs(&self, bundle: &Path) -> PathBuf {
        let root = self.root.as_ref().map_or("rootfs", |r| r.path.as_str());
        bundle.join(root)
    }
}

/// One `wisp run` of a container's module.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The module's path on the host (inside the rootfs).
    pub module: PathBuf,
    /// The module's arguments after argv[0].
    pub args: Vec<String>,
    /// `NAME=VALUE` entries.
    pub env: Vec<String>,
    /// Host directories and where the module sees them.
    pub dirs: Vec<(PathBuf, String)>,
}

impl Plan {
    /// The plan for `spec`'s process, whose rootfs is at `rootfs`.
    /// Directory checks for mounts happen on the host, so the spec must be
    /// the one of a container being created on this host.
    pub fn new(spec: &Spec, rootfs: &Path) -> Result<Plan, ShimError> {
        let process = spec.process.as_ref().ok_or(ShimError::NoModule)?;
        if process.terminal {
            return Err(ShimError::Terminal);
        }
        let (module, rest) = match process.args.split_first() {
            Some((first, rest)) => (module_path(rootfs, &process.cwd, first)?, rest),
            // An image with neither Entrypoint nor Cmd: its only `.wasm`
            // file at the top of the rootfs, as `wisp image import` picks
            // the module of a plain OCI image.
            None => (only_module(rootfs)?, &[][..]),
        };
        // An entry without `=` would make `wisp run --env NAME` pass the
        // shim's own value through: the container's env is only its spec.
        let env = process
            .env
            .iter()
            .filter(|e| e.contains('='))
            .cloned()
            .collect();
        let dirs = spec
            .mounts
            .iter()
            .filter_map(preopen)
            .filter(|(host, _)| host.is_dir())
            .collect();
        Ok(Plan {
            module,
            args: rest.to_vec(),
            env,
            dirs,
        })
    }

    /// The arguments of `wisp` for this plan: `run`, the options, `--`,
    /// the module and its arguments.
    pub fn wisp_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["run".into()];
        for e in &self.env {
            out.push("--env".into());
            out.push(e.into());
        }
        for (host, guest) in &self.dirs {
            out.push("--dir".into());
            let mut spec = host.as_os_str().to_os_string();
            spec.push("::");
            spec.push(guest);
            out.push(spec);
        }
        out.push("--".into());
        out.push(self.module.as_os_str().to_os_string());
        out.extend(self.args.iter().map(OsString::from));
        out
    }
}

/// The host path of the module `arg0` names, in `rootfs`: absolute, or
/// relative to `cwd`. `..` is refused so that the name cannot leave the
/// rootfs; symlinks are checked when the module is opened
/// ([`confined`]).
fn module_path(rootfs: &Path, cwd: &str, arg0: &str) -> Result<PathBuf, ShimError> {
    let inside = if arg0.starts_with('/') {
        PathBuf::from(arg0)
    } else {
        Path::new("/").join(cwd).join(arg0)
    };
    let mut path = rootfs.to_path_buf();
    for c in inside.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => path.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ShimError::Escape(arg0.to_string()))
            }
        }
    }
    Ok(path)
}

/// The one `.wasm` file in the top directory of `rootfs`.
fn only_module(rootfs: &Path) -> Result<PathBuf, ShimError> {
    let entries = std::fs::read_dir(rootfs)
        .map_err(|e| ShimError::io(format!("listing {}", rootfs.display()), e))?;
    let mut modules = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file());
    match (modules.next(), modules.next()) {
        (Some(module), None) => Ok(module),
        _ => Err(ShimError::NoModule),
    }
}

/// The module's real path, if it lies inside `rootfs` once symlinks are
/// resolved: an image's symlink must not make the shim (root) read a host
/// file as the module.
pub fn confined(rootfs: &Path, module: &Path) -> Result<PathBuf, ShimError> {
    let canon = |p: &Path| {
        p.canonicalize().map_err(|source| ShimError::Io {
            what: format!("resolving {}", p.display()),
            source,
        })
    };
    let root = canon(rootfs)?;
    let real = canon(module)?;
    if !real.starts_with(&root) {
        return Err(ShimError::Escape(module.display().to_string()));
    }
    Ok(real)
}

/// A mount as a `--dir` preopen: bind mounts only (proc, sysfs, tmpfs,
/// devpts, ... are the Linux process's, which a module never sees), at
/// a destination wisp accepts.
fn preopen(m: &Mount) -> Option<(PathBuf, String)> {
    let bind =
        m.kind.as_deref() == Some("bind") || m.options.iter().any(|o| o == "bind" || o == "rbind");
    let source = m.source.as_deref()?;
    let normal = m.destination.starts_with('/')
        && Path::new(&m.destination)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    (bind && normal).then(|| (PathBuf::from(source), m.destination.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plan_takes_module_args_env_and_directory_binds() {
        let host = tempfile::tempdir().unwrap();
        let data = host.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let file = host.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let s = spec(&format!(
            r#"{{
            "process": {{"args": ["/app/hello.wasm", "-x", "y"], "env": ["A=1", "LEAK", "B=2=3"], "cwd": "/"}},
            "root": {{"path": "rootfs"}},
            "mounts": [
                {{"destination": "/proc", "type": "proc", "source": "proc"}},
                {{"destination": "/data", "type": "bind", "source": "{}", "options": ["rbind", "rw"]}},
                {{"destination": "/etc/hosts", "type": "bind", "source": "{}", "options": ["rbind"]}},
                {{"destination": "/x/../etc", "type": "bind", "source": "{}", "options": ["rbind"]}}
            ]
        }}"#,
            data.display(),
            file.display(),
            data.display()
        ));
        let rootfs = Path::new("/b/rootfs");
        let plan = Plan::new(&s, rootfs).unwrap();
        assert_eq!(plan.module, Path::new("/b/rootfs/app/hello.wasm"));
        assert_eq!(plan.args, ["-x", "y"]);
        assert_eq!(plan.env, ["A=1", "B=2=3"]);
        assert_eq!(plan.dirs, [(data.clone(), "/data".to_string())]);
        let args = plan.wisp_args();
        let tail: Vec<_> = args[args.len() - 4..].iter().collect();
        assert_eq!(tail, ["--", "/b/rootfs/app/hello.wasm", "-x", "y"]);
        assert!(args.contains(&OsString::from(format!("{}::/data", data.display()))));
    }

    #[test]
    fn relative_module_resolves_against_cwd_and_cannot_escape() {
        let s = spec(r#"{"process": {"args": ["m.wasm"], "cwd": "/srv"}}"#);
        let plan = Plan::new(&s, Path::new("/r")).unwrap();
        assert_eq!(plan.module, Path::new("/r/srv/m.wasm"));
        let s = spec(r#"{"process": {"args": ["/../../etc/shadow"]}}"#);
        assert!(matches!(
            Plan::new(&s, Path::new("/r")),
            Err(ShimError::Escape(_))
        ));
    }

    #[test]
    fn without_args_the_only_top_level_module_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(r#"{"process": {"args": []}}"#);
        assert!(matches!(
            Plan::new(&s, dir.path()),
            Err(ShimError::NoModule)
        ));
        std::fs::write(dir.path().join("app.wasm"), "x").unwrap();
        std::fs::write(dir.path().join("README"), "x").unwrap();
        let plan = Plan::new(&s, dir.path()).unwrap();
        assert_eq!(plan.module, dir.path().join("app.wasm"));
        assert!(plan.args.is_empty());
        std::fs::write(dir.path().join("other.wasm"), "x").unwrap();
        assert!(matches!(
            Plan::new(&s, dir.path()),
            Err(ShimError::NoModule)
        ));
    }

    #[test]
    fn no_module_or_a_terminal_is_refused() {
        assert!(matches!(
            Plan::new(
                &spec(r#"{"process": {"args": []}}"#),
                Path::new("/nonexistent")
            ),
            Err(ShimError::Io { .. })
        ));
        assert!(matches!(
            Plan::new(&spec("{}"), Path::new("/r")),
            Err(ShimError::NoModule)
        ));
        assert!(matches!(
            Plan::new(
                &spec(r#"{"process": {"args": ["/m.wasm"], "terminal": true}}"#),
                Path::new("/r")
            ),
            Err(ShimError::Terminal)
        ));
    }

    #[test]
    fn symlink_out_of_the_rootfs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("../secret", rootfs.join("m.wasm")).unwrap();
        std::fs::write(rootfs.join("ok.wasm"), "x").unwrap();
        assert!(matches!(
            confined(&rootfs, &rootfs.join("m.wasm")),
            Err(ShimError::Escape(_))
        ));
        assert_eq!(
            confined(&rootfs, &rootfs.join("ok.wasm")).unwrap(),
            rootfs.canonicalize().unwrap().join("ok.wasm")
        );
    }

    #[test]
    fn sandbox_annotation_is_recognised() {
        let s = spec(r#"{"annotations": {"io.kubernetes.cri.container-type": "sandbox"}}"#);
        assert!(s.is_sandbox());
        assert!(!spec("{}").is_sandbox());
    }
}
