//! A hostile guest against the host end of the channel: descriptors, ring
//! indices and messages from the fuzzer's bytes, checked against the ABI.
//! See `wisp_vmm::fuzzing` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wisp_vmm::fuzzing::guest_channel(data));
