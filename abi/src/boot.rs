//! The boot record the host writes at [`crate::layout::BOOT_INFO_ADDR`]
//! before the agent's first instruction.

/// `b"WISPBOOT"` as a little-endian integer.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"WISPBOOT");

/// What the host tells the agent about its world. All addresses are guest
/// addresses; the agent trusts them (the host is trusted by the guest, never
/// the other way round).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Always [`BOOT_MAGIC`].
    pub magic: u64,
    /// The host's [`crate::ABI_VERSION`].
    pub abi_version: u32,
    /// A [`TestMode`] value; 0 in production.
    pub test_mode: u32,
    /// Bytes of guest memory.
    pub mem_size: u64,
    /// First byte of the heap.
    pub heap_start: u64,
    /// One past the last byte of the heap (the stack starts here).
    pub heap_end: u64,
    /// The precompiled module (a wasmtime ELF artifact).
    pub module_addr: u64,
    /// Length of the precompiled module in bytes.
    pub module_len: u64,
    /// TSC ticks per millisecond as the host measured it (0 if unknown).
    pub tsc_khz: u64,
    /// The files image ([`crate::files`]); 0 if there is none.
    pub files_addr: u64,
    /// Length of the files image in bytes.
    pub files_len: u64,
    /// The host's wall-clock time at boot, in nanoseconds since the Unix
    /// epoch: the agent's clocks run from it during instantiation and
    /// `wisp_init` (each request brings its own).
    pub realtime_ns: u64,
    /// A [`ReadyAt`] value: where the agent reports `Ready`, the point a
    /// snapshot captures.
    pub ready_at: u32,
    /// Zero.
    pub reserved: u32,
}

/// Where the agent reports `Ready` (the snapshot point).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyAt {
    /// Once the module is instantiated and its `wisp_init` export has run;
    /// each request then runs `_start`.
    Instantiated = 0,
    /// At the module's first read of stdin: the agent reports `Ready` once
    /// instantiated, takes one request for the boot (its arguments and
    /// environment), runs `_start` with it, and reports `Ready` again when
    /// the module first reads fd 0. Each later request (its clock and
    /// entropy; the module has read its arguments already) and its stdin
    /// are delivered to that read. For programs that set up at length
    /// before reading their input: language runtimes.
    FirstRead = 1,
}

impl ReadyAt {
    /// Decodes a boot-record value; unknown values mean
    /// [`ReadyAt::Instantiated`].
    pub fn from_u32(value: u32) -> ReadyAt {
        match value {
            1 => ReadyAt::FirstRead,
            _ => ReadyAt::Instantiated,
        }
    }
}

impl BootInfo {
    /// Size of the encoded record.
    pub const SIZE: usize = size_of::<BootInfo>();

    /// The record as the bytes the agent reads through a `#[repr(C)]` pointer.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let fields: [(usize, &[u8]); 14] = [
            (0, &self.magic.to_le_bytes()),
            (8, &self.abi_version.to_le_bytes()),
            (12, &self.test_mode.to_le_bytes()),
            (16, &self.mem_size.to_le_bytes()),
            (24, &self.heap_start.to_le_bytes()),
            (32, &self.heap_end.to_le_bytes()),
            (40, &self.module_addr.to_le_bytes()),
            (48, &self.module_len.to_le_bytes()),
            (56, &self.tsc_khz.to_le_bytes()),
            (64, &self.files_addr.to_le_bytes()),
            (72, &self.files_len.to_le_bytes()),
            (80, &self.realtime_ns.to_le_bytes()),
            (88, &self.ready_at.to_le_bytes()),
            (92, &self.reserved.to_le_bytes()),
        ];
        for (offset, bytes) in fields {
            out[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        out
    }
}

/// Deliberate misbehaviour for tests of the host's defences. The host only
/// sets these from its test-only API; a hostile guest can do all of this (and
/// worse) anyway, so honouring them in the agent grants nothing.
///
/// Unless a mode says otherwise, the agent misbehaves right after setting
/// up its channel, before it reports ready. Modes named `Rx…` corrupt
/// receive descriptor 0 (the first the host fills) and then ask for stdin,
/// so the host writes through it; the others hand the host a transmit
/// message.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestMode {
    /// Normal operation.
    None = 0,
    /// Write to a port the host does not serve.
    BogusPort = 1,
    /// Queue a channel descriptor pointing outside guest memory.
    BogusPointer = 2,
    /// Queue a message with a length larger than its buffer.
    BogusLength = 3,
    /// Touch an unmapped address (page fault at ring 3).
    PageFault = 4,
    /// Execute a privileged instruction (general protection fault).
    PrivilegedInstruction = 5,
    /// Spin forever without ever talking to the host.
    Spin = 6,
    /// Write one byte to the 32-bit `NOTIFY` port.
    PortWidth = 7,
    /// Read from the `NOTIFY` port (no port is ever read).
    PortRead = 8,
    /// Write a valid vector to the `FAULT` port from ordinary code, as if
    /// an exception had happened.
    ForgedFault = 9,
    /// Write a vector beyond the 32 exceptions to the `FAULT` port.
    FaultBadVector = 10,
    /// Report a panic with a length of 4 GiB.
    PanicHugeLength = 11,
    /// Queue a transmit descriptor chained to another that chains back.
    DescriptorLoop = 12,
    /// Queue an indirect descriptor whose table holds a valid message.
    IndirectDescriptor = 13,
    /// Move the transmit avail index 1000 entries ahead of the ring.
    AvailIndexJump = 14,
    /// Queue a transmit descriptor over the transmit descriptor table.
    TxOverlapsRing = 15,
    /// A receive descriptor chained to itself.
    RxDescriptorLoop = 16,
    /// A receive descriptor over the receive descriptor table.
    RxIntoRing = 17,
    /// A receive descriptor over the page tables.
    RxIntoPageTables = 18,
    /// A receive descriptor over the boot record.
    RxIntoBootInfo = 19,
    /// A receive descriptor over the module image.
    RxIntoModule = 20,
    /// A receive descriptor 4 GiB long.
    RxHugeLength = 21,
    /// A message of an unknown kind.
    UnknownKind = 22,
    /// A header claiming more payload than its descriptor holds.
    HeaderLongerThanDescriptor = 23,
    /// A header claiming less payload than its descriptor holds.
    HeaderShorterThanDescriptor = 24,
    /// A descriptor too short for a message header.
    TruncatedHeader = 25,
    /// An `Exit` message with a 2-byte exit code.
    TruncatedExit = 26,
    /// A host→guest message kind (`Request`) sent to the host.
    WrongDirection = 27,
    /// 1 MiB of stdout, far beyond a small output limit.
    OversizedOutput = 28,
    /// `Exit`, then more output in the same exchange.
    MessageAfterExit = 29,
    /// Ask the host to sleep for 584 years.
    SleepForever = 30,
    /// Behave until the first request arrives, then send a message of an
    /// unknown kind: a violation in the middle of an invocation (of a VM
    /// restored from a snapshot, say).
    UnknownKindAfterRequest = 31,
}

impl TestMode {
    /// Every mode, in value order.
    pub const ALL: [TestMode; 32] = [
        TestMode::None,
        TestMode::BogusPort,
        TestMode::BogusPointer,
        TestMode::BogusLength,
        TestMode::PageFault,
        TestMode::PrivilegedInstruction,
        TestMode::Spin,
        TestMode::PortWidth,
        TestMode::PortRead,
        TestMode::ForgedFault,
        TestMode::FaultBadVector,
        TestMode::PanicHugeLength,
        TestMode::DescriptorLoop,
        TestMode::IndirectDescriptor,
        TestMode::AvailIndexJump,
        TestMode::TxOverlapsRing,
        TestMode::RxDescriptorLoop,
        TestMode::RxIntoRing,
        TestMode::RxIntoPageTables,
        TestMode::RxIntoBootInfo,
        TestMode::RxIntoModule,
        TestMode::RxHugeLength,
        TestMode::UnknownKind,
        TestMode::HeaderLongerThanDescriptor,
        TestMode::HeaderShorterThanDescriptor,
        TestMode::TruncatedHeader,
        TestMode::TruncatedExit,
        TestMode::WrongDirection,
        TestMode::OversizedOutput,
        TestMode::MessageAfterExit,
        TestMode::SleepForever,
        TestMode::UnknownKindAfterRequest,
    ];

    /// Decodes a boot-record value; unknown values mean [`TestMode::None`].
    pub fn from_u32(value: u32) -> TestMode {
        TestMode::ALL
            .get(value as usize)
            .copied()
            .unwrap_or(TestMode::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_repr_c_layout() {
        let info = BootInfo {
            magic: BOOT_MAGIC,
            abi_version: 7,
            test_mode: 3,
            mem_size: 1 << 27,
            heap_start: 0x40_0000,
            heap_end: 0x7c0_0000,
            module_addr: 0x30_0000,
            module_len: 1234,
            tsc_khz: 2_000_000,
            files_addr: 0x50_0000,
            files_len: 4096,
            realtime_ns: 1_800_000_000_000_000_000,
            ready_at: ReadyAt::FirstRead as u32,
            reserved: 0,
        };
        let bytes = info.to_bytes();
        // SAFETY: BootInfo is repr(C), made only of integers, so any
        // suitably sized byte buffer is a valid value; read_unaligned copes
        // with the array's alignment.
        let back = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<BootInfo>()) };
        assert_eq!(back, info);
        assert_eq!(BootInfo::SIZE, 96);
    }

    #[test]
    fn ready_points_round_trip() {
        for at in [ReadyAt::Instantiated, ReadyAt::FirstRead] {
            assert_eq!(ReadyAt::from_u32(at as u32), at);
        }
        assert_eq!(ReadyAt::from_u32(7), ReadyAt::Instantiated);
    }

    #[test]
    fn test_modes_round_trip() {
        for (value, mode) in TestMode::ALL.iter().enumerate() {
            assert_eq!(*mode as u32, value as u32);
            assert_eq!(TestMode::from_u32(value as u32), *mode);
        }
        assert_eq!(TestMode::from_u32(99), TestMode::None);
    }
}
