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
}

impl BootInfo {
    /// Size of the encoded record.
    pub const SIZE: usize = core::mem::size_of::<BootInfo>();

    /// The record as the bytes the agent reads through a `#[repr(C)]` pointer.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let fields: [(usize, &[u8]); 11] = [
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
}

impl TestMode {
    /// Decodes a boot-record value; unknown values mean [`TestMode::None`].
    pub fn from_u32(value: u32) -> TestMode {
        match value {
            1 => TestMode::BogusPort,
            2 => TestMode::BogusPointer,
            3 => TestMode::BogusLength,
            4 => TestMode::PageFault,
            5 => TestMode::PrivilegedInstruction,
            6 => TestMode::Spin,
            _ => TestMode::None,
        }
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
        };
        let bytes = info.to_bytes();
        // SAFETY: BootInfo is repr(C), made only of integers, so any
        // suitably sized byte buffer is a valid value; read_unaligned copes
        // with the array's alignment.
        let back = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<BootInfo>()) };
        assert_eq!(back, info);
    }

    #[test]
    fn test_modes_round_trip() {
        for mode in [
            TestMode::None,
            TestMode::BogusPort,
            TestMode::BogusPointer,
            TestMode::BogusLength,
            TestMode::PageFault,
            TestMode::PrivilegedInstruction,
            TestMode::Spin,
        ] {
            assert_eq!(TestMode::from_u32(mode as u32), mode);
        }
        assert_eq!(TestMode::from_u32(99), TestMode::None);
    }
}
