//! Errors of one micro-VM run. A misbehaving guest produces one of these
//! for its own invocation; nothing it does can panic the host.

use std::time::Duration;

/// Everything that can end a VM run other than the module exiting or
/// trapping (see [`crate::Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM enabled, and may this user open /dev/kvm?)")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// Which operation.
        op: &'static str,
        /// The errno KVM returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The VM configuration is unusable.
    #[error("invalid VM configuration: {0}")]
    Config(String),
    /// Guest memory could not be created or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The agent or module could not be placed in guest memory.
    #[error("loading the guest: {0}")]
    Load(String),
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
    /// The guest broke the channel protocol: unknown port, bad descriptor,
    /// malformed message.
    #[error("guest protocol violation: {0}")]
    Protocol(String),
    /// The agent panicked.
    #[error("guest agent panicked: {0}")]
    AgentPanic(String),
    /// The agent could not load or instantiate the module (link errors,
    /// missing `_start`, incompatible artifact).
    #[error("{0}")]
    Module(String),
    /// The module needed more memory than the VM has.
    #[error("{0}")]
    OutOfMemory(String),
    /// The module wrote more than the output limit.
    #[error("output limit of {0} bytes exceeded")]
    OutputLimit(u64),
    /// Writing the module's output on the host failed.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// Reading stdin on the host failed.
    #[error("reading stdin: {0}")]
    Input(#[source] std::io::Error),
    /// A snapshot could not be written, or is unusable (corrupt, from
    /// another version, for another CPU).
    #[error("snapshot: {0}")]
    Snapshot(#[from] wisp_snapshot::Error),
    /// The deadline timer could not be armed.
    #[error("arming the timeout: {0}")]
    Timer(#[source] std::io::Error),
}

impl Error {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
