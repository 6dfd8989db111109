//! The shim's task service: containerd's create / start / kill / wait /
//! state / delete of a container, each container's module run by a `wisp
//! run` child process (its micro-VM lives and dies with that process).
//!
//! Exits come from `containerd-shim`'s reaper: it waits for every child
//! on SIGCHLD and sends (pid, status) to the subscribers of its monitor;
//! [`Service`] subscribes before it starts any child, so no exit is missed,
//! and records the pid under the same lock the exit watcher takes, so an
//! exit is never seen before its pid is known.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use containerd_shim as shim;
use log::{info, warn};
use shim::api;
use shim::monitor::{ExitEvent, Subject, Topic};
use shim::protos::api::{Mount as RootfsMount, ProcessInfo};
use shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use shim::protos::protobuf::{EnumOrUnknown, MessageDyn, MessageField};
use shim::protos::topics;
use shim::protos::ttrpc::context::Context;
use shim::synchronous::monitor::monitor_subscribe;
use shim::synchronous::publisher::RemotePublisher;
use shim::{ExitSignal, TtrpcContext, TtrpcResult};

use crate::error::ShimError;
use crate::spec::{confined, Plan, Spec};

/// The exit status containerd reports for a process killed by SIGKILL,
/// which is what happened to a container whose shim is gone.
pub const KILLED: u32 = 128 + 9;

/// Where a container's process is.
#[derive(Clone)]
enum ProcState {
    Created,
    Running {
        pid: u32,
    },
    Exited {
        pid: u32,
        status: u32,
        at: Timestamp,
    },
}

impl ProcState {
    fn name(&self) -> &'static str {
        match self {
            ProcState::Created => "created",
            ProcState::Running { .. } => "running",
            ProcState::Exited { .. } => "stopped",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            ProcState::Created => 0,
            ProcState::Running { pid } | ProcState::Exited { pid, .. } => *pid,
        }
    }
}

/// One container of this shim.
struct Container {
    bundle: PathBuf,
    /// The rootfs, and whether the shim mounted it (and so unmounts it).
    rootfs: PathBuf,
    mounted: bool,
    /// The module's run; `None` for a pod's sandbox container, which only
    /// waits to be killed.
    plan: Option<Plan>,
    stdin: String,
    stdout: String,
    stderr: String,
    state: ProcState,
}

/// What the service's threads share.
struct Shared {
    containers: Mutex<HashMap<String, Container>>,
    /// Notified whenever a container's process exits.
    exited: Condvar,
    /// Signalled when the shim may exit.
    exit: Arc<ExitSignal>,
    namespace: String,
    publisher: Option<RemotePublisher>,
    /// Sends a child to start to the spawner thread.
    spawner: Mutex<mpsc::Sender<Spawn>>,
}

/// A child for the spawner thread to start, and where its pid goes.
struct Spawn {
    command: Command,
    reply: mpsc::Sender<std::io::Result<u32>>,
}

/// The task service containerd talks to.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// A service for containers of `namespace`, publishing events with
    /// `publisher`; `exit` is signalled at shutdown.
    pub fn new(
        namespace: String,
        publisher: Option<RemotePublisher>,
        exit: Arc<ExitSignal>,
    ) -> Service {
        let (spawner, requests) = mpsc::channel();
        let shared = Arc::new(Shared {
            containers: Mutex::new(HashMap::new()),
            exited: Condvar::new(),
            exit,
            namespace,
            publisher,
            spawner: Mutex::new(spawner),
        });
        // Children ask to be SIGKILLed when the thread that forked them
        // ends (PR_SET_PDEATHSIG follows the thread, not the process), so
        // they are all forked by one thread that lives as long as the
        // shim: if the shim dies, no VM outlives it.
        std::thread::Builder::new()
            .name("wisp-spawner".into())
            .spawn(move || spawner_loop(requests))
            .map_err(|e| warn!("cannot start the spawner thread: {e}"))
            .ok();
        match monitor_subscribe(Topic::Pid) {
            Ok(subscription) => {
                let watched = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("wisp-exits".into())
                    .spawn(move || {
                        for event in subscription.rx.iter() {
                            watched.on_exit(event);
                        }
                    })
                    .map_err(|e| warn!("cannot start the exit watcher: {e}"))
                    .ok();
            }
            Err(e) => warn!("cannot watch exits: {e}"),
        }
        Service { shared }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        // A panic while holding the lock leaves the map consistent (every
        // update is one assignment), so a poisoned lock is still usable.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the exit of a child and tells containerd.
    fn on_exit(&self, event: ExitEvent) {
        let Subject::Pid(pid) = event.subject else {
            return;
        };
        let Ok(pid) = u32::try_from(pid) else {
            return;
        };
        let status = u32::try_from(event.exit_code).unwrap_or(KILLED);
        let at = Timestamp::now();
        let id = {
            let mut containers = self.lock();
            let found = containers
                .iter_mut()
                .find(|(_, c)| matches!(c.state, ProcState::Running { pid: p } if p == pid));
            let Some((id, c)) = found else {
                return;
            };
            c.state = ProcState::Exited {
                pid,
                status,
                at: at.clone(),
            };
            id.clone()
        };
        self.exited.notify_all();
        info!("container {id}: pid {pid} exited with {status}");
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: id.clone(),
                id,
                pid,
                exit_status: status,
                exited_at: MessageField::some(at),
                ..Default::default()
            },
        );
    }

    /// Marks a container without a child process (a sandbox, or one never
    /// started) as ended by `signal`.
    fn end_without_child(&self, c: &mut Container, id: &str, signal: u32) {
        let pid = c.state.pid();
        let at = Timestamp::now();
        c.state = ProcState::Exited {
            pid,
            status: 128 + signal,
            at: at.clone(),
        };
        self.exited.notify_all();
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: 128 + signal,
                exited_at: MessageField::some(at),
                ..Default::default()
            },
        );
    }

    fn publish(&self, topic: &str, event: impl MessageDyn) {
        if let Some(p) = &self.publisher {
            if let Err(e) = p.publish(Context::default(), topic, &self.namespace, Box::new(event)) {
                warn!("publishing {topic}: {e}");
            }
        }
    }

    /// Starts `command` on the spawner thread; returns its pid.
    fn spawn(&self, command: Command) -> Result<u32, ShimError> {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .spawner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Spawn { command, reply });
        let gone = || ShimError::io("spawning wisp", std::io::ErrorKind::BrokenPipe.into());
        sent.map_err(|_| gone())?;
        answer
            .recv()
            .map_err(|_| gone())?
            .map_err(|e| ShimError::io("spawning wisp run", e))
    }
}

/// The spawner thread: forks every child, so that their parent-death
/// signal is tied to a thread that never ends before the shim.
fn spawner_loop(requests: mpsc::Receiver<Spawn>) {
    for Spawn { mut command, reply } in requests {
        let _ = reply.send(command.spawn().map(|c| c.id()));
    }
}

/// Opens a stdio FIFO containerd made. Writers open it read-write, which
/// never blocks (a write-only open of a FIFO waits for a reader, and
/// containerd's reader may come later); the reader opens it non-blocking
/// for the same reason, then makes it blocking for the module.
fn open_stdio(path: &str, input: bool) -> Result<Stdio, ShimError> {
    if path.is_empty() {
        return Ok(Stdio::null());
    }
    let what = || format!("opening {path}");
    let file: File = if input {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| ShimError::io(what(), e))?;
        clear_nonblock(&f).map_err(|e| ShimError::io(what(), e))?;
        f
    } else {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| ShimError::io(what(), e))?
    };
    Ok(Stdio::from(file))
}

fn clear_nonblock(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows for its whole
    // run; F_GETFL/F_SETFL touch only its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The `wisp` binary: beside the shim (how the DaemonSet and packages
/// install them), else on PATH.
pub fn find_wisp() -> Result<PathBuf, ShimError> {
    let exe = std::env::current_exe().map_err(|e| ShimError::io("finding the shim", e))?;
    let beside = exe.with_file_name("wisp");
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("wisp"))
        .find(|p| p.is_file())
        .ok_or_else(|| ShimError::NoWisp(exe.display().to_string()))
}

/// The `wisp run` child of `plan`, with the container's stdio.
fn wisp_command(c: &Container, plan: &Plan) -> Result<Command, ShimError> {
    let wisp = find_wisp()?;
    let mut command = Command::new(wisp);
    command
        .args(plan.wisp_args())
        .current_dir(&c.bundle)
        .stdin(open_stdio(&c.stdin, true)?)
        .stdout(open_stdio(&c.stdout, false)?)
        .stderr(open_stdio(&c.stderr, false)?);
    // containerd started from systemd has no HOME: give `wisp run`'s
    // snapshot cache a place so that every run after the first restores.
    let has_home = ["WISP_CACHE_DIR", "XDG_CACHE_HOME", "HOME"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !has_home {
        command.env("WISP_CACHE_DIR", "/var/cache/wisp");
    }
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only prctl, getppid and _exit-free returns, all async-signal-safe;
    // it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The shim died between fork and prctl: do not run orphaned.
            if u32::try_from(libc::getppid()) != Ok(parent) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Unmounts a rootfs the shim mounted; lazily, so a straggling reader
/// does not keep the bundle from being removed.
pub fn unmount(rootfs: &Path) -> Result<(), ShimError> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(rootfs.as_os_str().as_bytes())
        .map_err(|_| ShimError::Rootfs(format!("{} has a NUL byte", rootfs.display())))?;
    // SAFETY: umount2 reads the NUL-terminated path, which outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        // Not mounted (EINVAL) or gone (ENOENT): nothing to undo.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(ShimError::Rootfs(format!(
                "unmounting {}: {e}",
                rootfs.display()
            )));
        }
    }
    Ok(())
}

/// Mounts containerd's rootfs mounts (a snapshot: overlay or bind) at
/// `rootfs`; returns whether anything was mounted.
fn mount_rootfs(mounts: &[RootfsMount], rootfs: &Path) -> Result<bool, ShimError> {
    for m in mounts {
        let kind = (!m.type_.is_empty()).then_some(m.type_.as_str());
        let source = (!m.source.is_empty()).then_some(m.source.as_str());
        if let Err(e) = shim::mount::mount_rootfs(kind, source, &m.options, rootfs) {
            // Undo what the earlier ones mounted.
            let _ = unmount(rootfs);
            return Err(ShimError::Rootfs(format!(
                "mounting {} at {}: {e}",
                m.source,
                rootfs.display()
            )));
        }
    }
    Ok(!mounts.is_empty())
}

/// The exec id of a request, which must be empty: the shim runs no execs.
fn no_exec(exec_id: &str) -> Result<(), ShimError> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(ShimError::Exec)
    }
}

impl Service {
    fn create_container(&self, req: &api::CreateTaskRequest) -> Result<u32, ShimError> {
        if req.terminal {
            return Err(ShimError::Terminal);
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = Spec::load(&bundle)?;
        let rootfs = spec.rootfs(&bundle);
        if self.shared.lock().contains_key(&req.id) {
            return Err(ShimError::Exists(req.id.clone()));
        }
        let mounted = mount_rootfs(&req.rootfs, &rootfs)?;
        let plan = if spec.is_sandbox() {
            None
        } else {
            let planned = Plan::new(&spec, &rootfs).and_then(|mut plan| {
                plan.module = confined(&rootfs, &plan.module)?;
                Ok(plan)
            });
            match planned {
                Ok(plan) => Some(plan),
                Err(e) => {
                    if mounted {
                        let _ = unmount(&rootfs);
                    }
                    return Err(e);
                }
            }
        };
        let container = Container {
            bundle,
            rootfs,
            mounted,
            plan,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            state: ProcState::Created,
        };
        self.shared.lock().insert(req.id.clone(), container);
        Ok(0)
    }

    fn start_container(&self, id: &str) -> Result<u32, ShimError> {
        let mut containers = self.shared.lock();
        let c = containers
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
        if !matches!(c.state, ProcState::Created) {
            return Err(ShimError::State {
                id: id.to_string(),
                state: c.state.name(),
                action: "start",
            });
        }
        let pid = match &c.plan {
            // The pod sandbox has no process; the shim stands in for it.
            None => std::process::id(),
            Some(plan) => {
                let command = wisp_command(c, plan)?;
                // Spawned with the lock held: the exit watcher cannot look
                // for this pid before it is recorded.
                self.shared.spawn(command)?
            }
        };
        c.state = ProcState::Running { pid };
        Ok(pid)
    }

    fn kill_container(&self, id: &str, signal: u32) -> Result<(), ShimError> {
        let mut containers = self.shared.lock();
        let c = containers
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
        match (&c.state, &c.plan) {
            (ProcState::Running { pid }, Some(_)) => {
                let pid = i32::try_from(*pid)
                    .map_err(|_| ShimError::Rootfs(format!("pid {pid} out of range")))?;
                let signal = i32::try_from(signal).unwrap_or(libc::SIGKILL);
                // SAFETY: kill has no memory effects; the pid is our own
                // child, not yet reaped (the exit watcher would have marked
                // it exited under the lock this function holds).
                if unsafe { libc::kill(pid, signal) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(ShimError::io(format!("signalling pid {pid}"), e));
                    }
                }
            }
            (ProcState::Running { .. }, None) | (ProcState::Created, _) => {
                self.shared.end_without_child(c, id, signal);
            }
            (ProcState::Exited { .. }, _) => {}
        }
        Ok(())
    }

    fn delete_container(&self, id: &str) -> Result<api::DeleteResponse, ShimError> {
        let c = {
            let mut containers = self.shared.lock();
            let c = containers
                .get(id)
                .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
            if let ProcState::Running { .. } = c.state {
                return Err(ShimError::State {
                    id: id.to_string(),
                    state: "running",
                    action: "delete",
                });
            }
            containers
                .remove(id)
                .ok_or_else(|| ShimError::NotFound(id.to_string()))?
        };
        if c.mounted {
            unmount(&c.rootfs)?;
        }
        let (pid, status, at) = match c.state {
            ProcState::Exited { pid, status, at } => (pid, status, at),
            _ => (0, 0, Timestamp::now()),
        };
        self.shared.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: id.to_string(),
                pid,
                exit_status: status,
                exited_at: MessageField::some(at.clone()),
                ..Default::default()
            },
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: status,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    fn wait_container(&self, id: &str) -> Result<api::WaitResponse, ShimError> {
        let mut containers = self.shared.lock();
        loop {
            let c = containers
                .get(id)
                .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
            if let ProcState::Exited { status, at, .. } = &c.state {
                return Ok(api::WaitResponse {
                    exit_status: *status,
                    exited_at: MessageField::some(at.clone()),
                    ..Default::default()
                });
            }
            containers = self
                .shared
                .exited
                .wait(containers)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn state_of(&self, id: &str) -> Result<api::StateResponse, ShimError> {
        let containers = self.shared.lock();
        let c = containers
            .get(id)
            .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
        let status = match c.state {
            ProcState::Created => api::Status::CREATED,
            ProcState::Running { .. } => api::Status::RUNNING,
            ProcState::Exited { .. } => api::Status::STOPPED,
        };
        let (exit_status, exited_at) = match &c.state {
            ProcState::Exited { status, at, .. } => (*status, MessageField::some(at.clone())),
            _ => (0, MessageField::none()),
        };
        Ok(api::StateResponse {
            id: id.to_string(),
            bundle: c.bundle.display().to_string(),
            pid: c.state.pid(),
            status: EnumOrUnknown::new(status),
            stdin: c.stdin.clone(),
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            terminal: false,
            exit_status,
            exited_at,
            ..Default::default()
        })
    }
}

impl shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = self.create_container(&req)?;
        info!("created container {} in {}", req.id, req.bundle);
        self.shared.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                pid,
                ..Default::default()
            },
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        no_exec(&req.exec_id)?;
        let pid = self.start_container(&req.id)?;
        info!("started container {}: pid {pid}", req.id);
        self.shared.publish(
            topics::TASK_START_EVENT_TOPIC,
            TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            },
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        no_exec(&req.exec_id)?;
        self.kill_container(&req.id, req.signal)?;
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        no_exec(&req.exec_id)?;
        Ok(self.delete_container(&req.id)?)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        no_exec(&req.exec_id)?;
        Ok(self.wait_container(&req.id)?)
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        no_exec(&req.exec_id)?;
        Ok(self.state_of(&req.id)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let state = self.state_of(&req.id)?;
        let processes = (state.pid != 0)
            .then(|| ProcessInfo {
                pid: state.pid,
                ..Default::default()
            })
            .into_iter()
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.shared.lock().get(&req.id).map_or(0, |c| c.state.pid());
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // containerd asks after each delete; the shim goes once it holds
        // no container (or when told to go now).
        if req.now || self.shared.lock().is_empty() {
            self.shared.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
