//! vCPU state for a direct entry into the agent: long mode, paging on,
//! ring 3 with IOPL 3, SSE (and AVX where the host has it) enabled.

use std::sync::OnceLock;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_xcrs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use wisp_abi::layout::{selectors, GDT_ADDR, IDT_ADDR, PML4_ADDR, TSS_ADDR};

use super::gdt::{GDT_BYTES, IDT_BYTES, TSS_BYTES};
use crate::error::{Error, Result};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// IOPL 3 (bits 12-13) lets ring 3 use `out`; bit 1 is always set.
const RFLAGS: u64 = (3 << 12) | (1 << 1);

/// AMX tile state (XTILECFG, XTILEDATA): never enabled, so the vCPU's XSAVE
/// state fits the 4 KiB `KVM_GET_XSAVE`/`KVM_SET_XSAVE` buffer snapshots use.
const XCR0_AMX: u64 = (1 << 17) | (1 << 18);

/// The CPUID KVM supports, fetched once per process (the ioctl is slow and
/// the answer never changes): what a booted vCPU is given. On PVM ring-3
/// `cpuid` is not intercepted anyway; on hardware KVM this is what the
/// guest sees.
pub fn supported_cpuid(kvm: &Kvm) -> Result<&'static CpuId> {
    static CPUID: OnceLock<CpuId> = OnceLock::new();
    if let Some(c) = CPUID.get() {
        return Ok(c);
    }
    let c = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("GET_SUPPORTED_CPUID"))?;
    Ok(CPUID.get_or_init(|| c))
}

/// XSAVE feature and the XCR0 bits KVM lets the guest enable.
fn xsave_support(cpuid: &CpuId) -> Option<u64> {
    let entries = cpuid.as_slice();
    let leaf1 = entries.iter().find(|e| e.function == 1)?;
    if leaf1.ecx & (1 << 26) == 0 {
        return None;
    }
    let leafd = entries.iter().find(|e| e.function == 0xd && e.index == 0)?;
    Some(u64::from(leafd.eax) | (u64::from(leafd.edx) << 32))
}

/// The host's own XCR0: the guest enables no state component the host
/// kernel does not manage.
fn host_xcr0() -> u64 {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ECX=0 is valid once the OS enabled XSAVE, which
    // the feature check above (it tests OSXSAVE) guarantees.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The XCR0 a booted vCPU gets (without the x87 and SSE bits, which are
/// always on): the state components KVM lets the guest enable, less those
/// the host kernel does not manage and AMX; `None` if KVM offers no XSAVE,
/// and then the guest has no AVX.
pub fn guest_xcr0(kvm: &Kvm) -> Result<Option<u64>> {
    let cpuid = supported_cpuid(kvm)?;
    Ok(xsave_support(cpuid).map(|supported| supported & host_xcr0() & !XCR0_AMX))
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: (selector & 3) as u8,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU at `entry` in 64-bit ring 3 with `stack_top` as RSP. The
/// CPUID must already be set (to [`supported_cpuid`]).
pub fn configure_vcpu(kvm: &Kvm, vcpu: &VcpuFd, entry: u64, stack_top: u64) -> Result<()> {
    let xcr0 = guest_xcr0(kvm)?;

    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("GET_SREGS"))?;
    let code = segment(selectors::USER_CODE, true);
    let data = segment(selectors::USER_DATA, false);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS_ADDR,
        limit: TSS_BYTES as u32 - 1,
        selector: selectors::TSS,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = GDT_BYTES - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = IDT_BYTES - 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 =
        CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if xcr0.is_some() { CR4_OSXSAVE } else { 0 };
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(Error::kvm("SET_SREGS"))?;

    if let Some(xcr0) = xcr0 {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        // x87 and SSE state are architecturally required in XCR0.
        xcrs.xcrs[0].value = xcr0 | 0b11;
        vcpu.set_xcrs(&xcrs).map_err(Error::kvm("SET_XCRS"))?;
    }

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("SET_FPU"))?;

    let regs = kvm_regs {
        rip: entry,
        rsp: stack_top,
        rflags: RFLAGS,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(Error::kvm("SET_REGS"))
}
