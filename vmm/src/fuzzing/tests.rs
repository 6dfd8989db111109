//! Tests of both targets on stable: pseudo-random inputs, and the inputs
//! that once found bugs.

use super::{guest_channel, messages, seeds};

#[test]
fn random_programs_keep_the_invariants() {
    // A cheap stand-in for the fuzzer: deterministic pseudo-random
    // programs, plus every seed with one byte flipped.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let data: Vec<u8> = (0..256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        guest_channel(&data);
        messages(&data);
    }
    for seed in seeds() {
        for i in 0..seed.len() {
            let mut s = seed.clone();
            s[i] ^= 0x5a;
            guest_channel(&s);
        }
    }
}

/// Every input kept under `fuzz/regressions/<target>/` still passes.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    for (target, f) in [
        ("guest_channel", guest_channel as fn(&[u8])),
        ("messages", messages),
    ] {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("read the regressions directory").path();
            f(&std::fs::read(&path).expect("read a regression input"));
        }
    }
}
