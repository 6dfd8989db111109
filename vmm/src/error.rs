//! Errors of one micro-VM: one variant per operation that can fail,
//! carrying the OS error where there is one. A misbehaving guest produces
//! one of these for its own run; nothing it does can panic the host.
//!
//! `Display` says what failed and never repeats the `#[source]`: print the
//! chain (`{:#}` with anyhow) to see why. [`Error::blame`] says whose fault
//! an error is, which is how callers decide between failing a request,
//! retrying it or asking the client to come back later.

use std::time::Duration;

use wisp_abi::msg::Kind;

/// A boxed lower-level error (vm-memory's, vm-memory's mmap's).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can end a VM run other than the module exiting or
/// trapping (see [`crate::Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm (is KVM enabled, and may this user open /dev/kvm?)")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed")]
    Kvm {
        /// Which operation.
        op: &'static str,
        /// The errno KVM returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The VM was asked for something its configuration rules out.
    #[error("invalid VM configuration")]
    Config(#[from] ConfigError),
    /// The guest's files could not be laid out.
    #[error("the guest's files")]
    Files(#[from] FilesError),
    /// Guest memory could not be mapped.
    #[error("mapping {mib} MiB of guest memory")]
    MapMemory {
        /// Its size in MiB.
        mib: u64,
        /// Why (an `mmap` errno inside).
        #[source]
        source: Cause,
    },
    /// A snapshot's memory file could not be opened or mapped.
    #[error("mapping the snapshot's memory file")]
    MapSnapshot(#[source] Cause),
    /// `madvise` on guest memory failed.
    #[error("madvise({advice}) on guest memory")]
    Madvise {
        /// The advice.
        advice: i32,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// A range of guest memory the host meant to access does not exist.
    #[error("{len} bytes at guest address {addr:#x} are outside guest memory")]
    OutOfRange {
        /// First byte.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Reading the snapshot's memory file (to reset pages) failed.
    #[error("reading the snapshot's memory file")]
    ReadSnapshot(#[source] std::io::Error),
    /// Reading `/proc/self/pagemap` (the working set) failed.
    #[error("reading /proc/self/pagemap")]
    Pagemap(#[source] std::io::Error),
    /// `mincore` on guest memory (what a reset must drop) failed.
    #[error("mincore on guest memory")]
    Mincore(#[source] std::io::Error),
    /// The agent's ELF could not be loaded.
    #[error("loading the agent")]
    LoadAgent(#[source] linux_loader::loader::Error),
    /// The vCPU's register state could not be captured or restored.
    #[error("vCPU state: {0}")]
    CpuState(&'static str),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp filter")]
    Seccomp(#[source] Cause),
    /// The run exceeded its wall-clock limit.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A CPU exception in the guest.
    #[error("guest fault: {name} (vector {vector}) at rip {rip:#x}, error code {error_code:#x}{}", fault_addr.map(|a| format!(", address {a:#x}")).unwrap_or_default())]
    GuestFault {
        /// Exception vector.
        vector: u8,
        /// Mnemonic such as `#PF`.
        name: &'static str,
        /// The error code the CPU pushed (0 if none).
        error_code: u64,
        /// Faulting instruction.
        rip: u64,
        /// CR2 for page faults.
        fault_addr: Option<u64>,
    },
    /// The guest triple-faulted (KVM reported a shutdown).
    #[error("guest triple fault: the vCPU shut down")]
    TripleFault,
    /// The guest broke the channel protocol.
    #[error("guest protocol violation")]
    Protocol(#[from] ProtocolError),
    /// The agent panicked (its message, as the guest wrote it).
    #[error("guest agent panicked: {0}")]
    AgentPanic(String),
    /// The agent could not load or instantiate the module (link errors,
    /// missing `_start`, incompatible artifact), in the agent's words.
    #[error("{0}")]
    Module(String),
    /// The module ended before it was ready: while it was being
    /// instantiated, or (booted to its first read of stdin) before that
    /// read.
    #[error("the module ended before it was ready ({outcome:?})")]
    EndedDuringInit {
        /// How it ended.
        outcome: crate::Outcome,
        /// The end of what it wrote to stderr meanwhile (at most
        /// [`crate::INIT_STDERR_TAIL`] bytes, lossy UTF-8): often why.
        stderr: String,
    },
    /// The module needed more memory than the VM has, in the agent's
    /// words.
    #[error("{0}")]
    OutOfMemory(String),
    /// The module wrote more than the output limit.
    #[error("output limit of {0} bytes exceeded")]
    OutputLimit(u64),
    /// Writing the module's output on the host failed.
    #[error("writing output")]
    Output(#[source] std::io::Error),
    /// Reading stdin on the host failed.
    #[error("reading stdin")]
    Input(#[source] std::io::Error),
    /// A snapshot could not be written, or is unusable (corrupt, from
    /// another version, for another CPU).
    #[error("snapshot")]
    Snapshot(#[from] wisp_snapshot::Error),
    /// The deadline timer could not be armed.
    #[error("arming the timeout")]
    Timer(#[source] std::io::Error),
    /// The VM already served its invocation and must be reset (or, for a
    /// freshly booted VM, dropped).
    #[error("this VM already served an invocation{}", if *.restored { "; reset it first" } else { "" })]
    AlreadyUsed {
        /// Whether it was restored (and so can be reset).
        restored: bool,
    },
    /// Only a VM restored from a snapshot can do this.
    #[error("only a VM restored from a snapshot can {0}")]
    NotRestored(&'static str),
    /// A snapshot written from a capture the VM has run (or been reset)
    /// since.
    #[error("the VM ran after its state was captured; capture it again")]
    NotCaptured,
}

/// A configuration that no VM can run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Guest memory outside the supported range.
    #[error("memory size {mib} MiB is outside {min}..={max} MiB")]
    MemorySize {
        /// Asked for, in MiB.
        mib: u64,
        /// Smallest, in MiB.
        min: u64,
        /// Largest, in MiB.
        max: u64,
    },
    /// Guest memory not a multiple of 2 MiB.
    #[error("memory size {0} bytes is not a multiple of 2 MiB")]
    MemoryAlignment(u64),
    /// The agent, module and files leave no room for a heap.
    #[error("{mem_mib} MiB of guest memory cannot hold the agent, a {module_kib} KiB module, {files_kib} KiB of files and a heap; raise the memory size")]
    TooSmall {
        /// Guest memory in MiB.
        mem_mib: u64,
        /// The module's size in KiB.
        module_kib: u64,
        /// The files' size in KiB.
        files_kib: u64,
    },
    /// A reset of a VM restored without [`crate::VmConfig::resettable`].
    #[error(
        "this VM was restored without write logging (VmConfig::resettable) and cannot be reset"
    )]
    NotResettable,
    /// The invocation's arguments and environment do not fit the request
    /// buffer.
    #[error("arguments and environment take {needed} bytes; the request buffer holds {limit}")]
    RequestTooLarge {
        /// Bytes the request needs (at least).
        needed: usize,
        /// Bytes the buffer holds.
        limit: usize,
    },
}

/// A directory tree that cannot be given to a guest.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A mount point that is not an absolute, normalised path.
    #[error("guest directory `{path}` {why}")]
    GuestPath {
        /// The mount point.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A path inside a mount that is not relative and normalised.
    #[error("file path `{0}` must be relative and normalised")]
    EntryPath(String),
    /// Two mounts at one guest directory.
    #[error("guest directory `{0}` is mounted twice")]
    MountedTwice(String),
    /// A file added to a host directory's mount.
    #[error("{0} is a host directory: files cannot be added to it")]
    HostMount(String),
    /// A file added before any mount.
    #[error("a file added before any mount")]
    NoMount,
    /// A host path that is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(String),
    /// A socket, device or FIFO.
    #[error("{0}: only files, directories and symlinks can be given to a guest")]
    Unsupported(String),
    /// A name or link target that is not UTF-8.
    #[error("{0}: the name is not UTF-8")]
    NotUtf8(String),
    /// Reading the host directory failed.
    #[error("reading {path}")]
    Io {
        /// The host path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A way the guest broke the channel protocol. Each ends the guest's own
/// run and nothing else.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// An exit to an MMIO address (nothing is backed there).
    #[error("access to unbacked guest-physical address {0:#x}")]
    UnbackedAccess(u64),
    /// A read from an I/O port (the host serves only writes).
    #[error("read from I/O port {0:#x}")]
    PortRead(u16),
    /// A write to a port the host does not serve.
    #[error("write to unknown I/O port {0:#x}")]
    UnknownPort(u16),
    /// A port written with the wrong width.
    #[error("{width}-byte write to I/O port {port:#x}, which takes {expected}-byte writes")]
    PortWidth {
        /// The port.
        port: u16,
        /// Bytes written.
        width: usize,
        /// Bytes the port takes.
        expected: usize,
    },
    /// `hlt` at ring 3 or with interrupts off.
    #[error("the guest halted")]
    Halted,
    /// KVM could not emulate an instruction.
    #[error("KVM could not emulate a guest instruction (internal error)")]
    Emulation,
    /// KVM could not enter the guest.
    #[error("KVM failed to enter the guest (reason {0:#x})")]
    EntryFailed(u64),
    /// Any other exit.
    #[error("unexpected VM exit {0}")]
    UnexpectedExit(String),
    /// The fault port written with a vector beyond the exceptions.
    #[error("fault port written with bad vector {0}")]
    BadFaultVector(u8),
    /// The fault port written from ordinary code.
    #[error("fault port written outside an exception (rsp {0:#x})")]
    ForgedFault(u64),
    /// A message after the run's final one.
    #[error("{0:?} after the final message")]
    AfterFinal(Kind),
    /// A message of the wrong kind for the phase.
    #[error("unexpected {kind:?} message while {phase}")]
    Unexpected {
        /// The message kind.
        kind: Kind,
        /// What the VM was doing.
        phase: &'static str,
    },
    /// A message whose payload has the wrong length for its kind.
    #[error("a {kind:?} message with a {len}-byte payload")]
    BadPayload {
        /// The message kind.
        kind: Kind,
        /// Its payload length.
        len: usize,
    },
    /// The guest reported ready a second time.
    #[error("the guest reported ready twice")]
    ReadyTwice,
    /// No receive buffer posted when the host had to answer.
    #[error("the guest posted no receive buffer for {0}")]
    NoRxBuffer(&'static str),
    /// A receive buffer too small for what it must hold.
    #[error("a receive buffer too small for {0}")]
    RxTooSmall(&'static str),
    /// A descriptor chain that is empty, chained, indirect or of the wrong
    /// direction.
    #[error("{queue} descriptor {head} {problem}")]
    Descriptor {
        /// `"rx"` or `"tx"`.
        queue: &'static str,
        /// The chain's head index.
        head: u16,
        /// What is wrong.
        problem: DescriptorProblem,
    },
    /// A descriptor outside its queue's buffer area.
    #[error("{queue} descriptor {addr:#x}+{len} is outside the {queue} buffers")]
    OutsideBuffers {
        /// `"rx"` or `"tx"`.
        queue: &'static str,
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A message header whose length disagrees with its descriptor.
    #[error(
        "a {kind:?} message of {message} bytes in a {descriptor}-byte descriptor; they must agree"
    )]
    LengthMismatch {
        /// The message kind.
        kind: Kind,
        /// The length the header claims, header included.
        message: usize,
        /// The descriptor's length.
        descriptor: usize,
    },
    /// A message that does not decode.
    #[error("malformed message")]
    Message(#[source] wisp_abi::msg::DecodeError),
    /// The rings themselves are broken (bad index, unreadable ring).
    #[error("virtqueue")]
    Queue(#[source] Cause),
    /// A restored VM's first exit was not the one its snapshot was taken
    /// at.
    #[error("a restored VM's first exit was {0}, not its snapshot's")]
    RestoreExit(String),
}

/// What is wrong with a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorProblem {
    /// The chain has no descriptor.
    #[error("is an empty chain")]
    Empty,
    /// It points to an indirect table.
    #[error("is indirect; the channel has no indirect descriptors")]
    Indirect,
    /// It is chained, or the device may not access it in the needed
    /// direction.
    #[error("must be single and {0}")]
    NotSingle(&'static str),
}

/// Whose fault an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The guest's: it faulted, timed out, broke the protocol, ran out of
    /// its memory or wrote too much. Its run fails; nothing else does.
    Guest,
    /// The host is out of a resource (memory, descriptors, KVM's kernel
    /// memory): the same request can succeed later.
    Exhausted,
    /// The host failed otherwise (KVM, a file): a request may be retried
    /// once on a fresh VM.
    Host,
    /// The caller asked for what cannot work (configuration, files, a VM in
    /// the wrong state): retrying the same request cannot help.
    Caller,
}

/// errnos that mean the host ran out of something.
const EXHAUSTION: [i32; 5] = [
    libc::ENOMEM,
    libc::EMFILE,
    libc::ENFILE,
    libc::EAGAIN,
    libc::ENOSPC,
];

impl Error {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }

    /// The OS error underneath, if the failure came from a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::KvmUnavailable(e) | Error::Kvm { source: e, .. } => Some(e.errno()),
            _ => {
                let mut cause = std::error::Error::source(self);
                while let Some(e) = cause {
                    if let Some(os) = e
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::raw_os_error)
                    {
                        return Some(os);
                    }
                    cause = e.source();
                }
                None
            }
        }
    }

    /// Whose fault this is.
    pub fn blame(&self) -> Blame {
        let exhausted = self.errno().is_some_and(|e| EXHAUSTION.contains(&e));
        match self {
            Error::Timeout(_)
            | Error::GuestFault { .. }
            | Error::TripleFault
            | Error::Protocol(_)
            | Error::AgentPanic(_)
            | Error::Module(_)
            | Error::EndedDuringInit { .. }
            | Error::OutOfMemory(_)
            | Error::OutputLimit(_) => Blame::Guest,
            Error::Config(_)
            | Error::Files(_)
            | Error::AlreadyUsed { .. }
            | Error::NotRestored(_)
            | Error::NotCaptured => Blame::Caller,
            _ if exhausted => Blame::Exhausted,
            _ => Blame::Host,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_never_repeats_the_source() {
        let e = Error::Kvm {
            op: "RUN",
            source: kvm_ioctls::Error::new(libc::EFAULT),
        };
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(!e.to_string().contains(&source), "{e}");
        let e = Error::MapMemory {
            mib: 64,
            source: Box::new(std::io::Error::from_raw_os_error(libc::ENOMEM)),
        };
        assert_eq!(e.to_string(), "mapping 64 MiB of guest memory");
    }

    #[test]
    fn exhaustion_is_told_from_its_errno_through_the_chain() {
        let mapped = |errno| Error::MapMemory {
            mib: 64,
            source: Box::new(std::io::Error::from_raw_os_error(errno)),
        };
        assert_eq!(mapped(libc::ENOMEM).errno(), Some(libc::ENOMEM));
        assert_eq!(mapped(libc::ENOMEM).blame(), Blame::Exhausted);
        assert_eq!(mapped(libc::EINVAL).blame(), Blame::Host);
        let kvm = |errno| Error::Kvm {
            op: "CREATE_VM",
            source: kvm_ioctls::Error::new(errno),
        };
        assert_eq!(kvm(libc::EMFILE).blame(), Blame::Exhausted);
        assert_eq!(kvm(libc::EFAULT).blame(), Blame::Host);
        assert_eq!(Error::Timeout(Duration::ZERO).blame(), Blame::Guest);
        let config = Error::Config(ConfigError::RequestTooLarge {
            needed: 70_000,
            limit: 65_536,
        });
        assert_eq!(config.blame(), Blame::Caller);
    }
}
