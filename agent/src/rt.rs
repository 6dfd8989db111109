//! The freestanding runtime: entry point, the C symbols the compiler and
//! wasmtime expect from a libc, and the panic path.
//!
//! Nothing here may call `memcpy`/`memset` implicitly: these *are* those
//! functions, so they use string instructions directly.

use core::arch::{asm, global_asm};

use wisp_abi::layout::{PANIC_MSG_ADDR, PANIC_MSG_MAX};
use wisp_abi::ports;

use crate::port;

// The host enters here at ring 3 with RSP at the top of the agent stack.
// Align the stack for the SysV ABI and call into Rust; agent_main never
// returns.
global_asm!(
    ".section .text._start,\"ax\",@progbits",
    ".global _start",
    "_start:",
    "    and rsp, -16",
    "    xor ebp, ebp",
    "    call {main}",
    "    ud2",
    main = sym crate::agent_main,
);

/// Copies `n` bytes; the regions must not overlap.
///
/// # Safety
/// As C's `memcpy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for `n` bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// Copies `n` bytes between possibly overlapping regions.
///
/// # Safety
/// As C's `memmove`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // Forward copy is safe: dest is below src or the ranges are disjoint.
        // SAFETY: forwarded caller contract.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copy backwards with the direction flag set, restored after.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _,
             inout("rdi") dest.add(n).wrapping_sub(1) => _,
             inout("rsi") src.add(n).wrapping_sub(1) => _,
             options(nostack));
    }
    dest
}

/// Fills `n` bytes with `c`.
///
/// # Safety
/// As C's `memset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid for `n` bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// Compares `n` bytes.
///
/// # Safety
/// As C's `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees both ranges hold n bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compares `n` bytes for equality only.
///
/// # Safety
/// As C's `bcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded caller contract.
    unsafe { memcmp(a, b, n) }
}

/// String length, for the few C-string paths in dependencies.
///
/// # Safety
/// As C's `strlen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a NUL-terminated string.
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}

// With panic=abort nothing unwinds, but the precompiled `alloc` still
// references the personality routine and `_Unwind_Resume`.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    fatal("_Unwind_Resume called with panic=abort")
}

// wasmtime's thread-local pointers: slot 0 is the runtime's activation
// list, slot 1 is reserved for component-model-async (never enabled). The
// guest has exactly one thread, so plain statics are the thread's storage.
static mut TLS_SLOTS: [*mut u8; 2] = [core::ptr::null_mut(); 2];

#[unsafe(no_mangle)]
extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    // SAFETY: single-threaded guest, no reentrancy across this access;
    // `get` bounds-checks the slot wasmtime passes.
    unsafe {
        (*core::ptr::addr_of!(TLS_SLOTS))
            .get(slot)
            .copied()
            .unwrap_or(core::ptr::null_mut())
    }
}

#[unsafe(no_mangle)]
extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    // SAFETY: as in `wasmtime_tls_get`.
    unsafe {
        if let Some(s) = (*core::ptr::addr_of_mut!(TLS_SLOTS)).get_mut(slot) {
            *s = ptr;
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut msg = FixedBuf::new();
    let _ = core::fmt::write(&mut msg, format_args!("agent panic: {info}"));
    report_fatal(msg.as_bytes())
}

/// Ends the run with a message; for conditions the agent cannot survive.
pub fn fatal(msg: &str) -> ! {
    report_fatal(msg.as_bytes())
}

fn report_fatal(msg: &[u8]) -> ! {
    let len = msg.len().min(PANIC_MSG_MAX as usize);
    // SAFETY: PANIC_MSG_ADDR..+PANIC_MSG_MAX is a mapped, agent-writable page
    // reserved for this message (wisp_abi::layout).
    unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), PANIC_MSG_ADDR as *mut u8, len) };
    loop {
        port::out32(ports::PANIC, len as u32);
    }
}

/// A formatting target that needs no allocator (the allocator may be what
/// failed).
struct FixedBuf {
    buf: [u8; 512],
    len: usize,
}

impl FixedBuf {
    fn new() -> Self {
        FixedBuf {
            buf: [0; 512],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
