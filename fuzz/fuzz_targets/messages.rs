//! `wisp_abi::msg`'s decoders on arbitrary bytes, checked against the
//! encoders. See `wisp_vmm::fuzzing::messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wisp_vmm::fuzzing::messages(data));
