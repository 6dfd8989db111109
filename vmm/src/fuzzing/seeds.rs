//! Seed inputs for the `guest_channel` target, and the tests that they
//! exercise what they should.

use wisp_abi::layout::{CHANNEL_BUFS, PML4_ADDR, TX_BUF_ADDR, TX_DESC_ADDR};
use wisp_abi::msg::Kind;

use super::guest::{F_INDIRECT, F_NEXT, F_WRITE};
use super::program::{DrainAs, Program};

/// Seed inputs for the `guest_channel` target: an agent's normal exchanges
/// and a few classic attacks, each a valid program.
pub fn seeds() -> Vec<Vec<u8>> {
    let boot = || {
        (0..CHANNEL_BUFS as u8).fold(
            Program::new(0, 0, 0x8000, b"stdin data\n"),
            Program::post_rx,
        )
    };
    let mut seeds = vec![
        // Boot, request, hello world, exit.
        boot()
            .send(0, Kind::Ready, b"")
            .drain(DrainAs::Boot)
            .push_request(&[b"prog", b"arg"], &[b"K=V"])
            .send(1, Kind::Stdout, b"hello\n")
            .send(2, Kind::Stderr, b"oops\n")
            .send(3, Kind::Exit, &0i32.to_le_bytes())
            .drain(DrainAs::Invoke)
            .check()
            .bytes(),
        // Reading stdin to EOF.
        boot()
            .send(0, Kind::StdinRequest, b"")
            .drain(DrainAs::Invoke)
            .send(0, Kind::StdinRequest, b"")
            .drain(DrainAs::Invoke)
            .feed(false)
            .send(1, Kind::Sleep, &5u64.to_le_bytes())
            .send(2, Kind::Trap, b"unreachable")
            .drain(DrainAs::Invoke)
            .bytes(),
        // Output past the limit, then salvage.
        Program::new(0xfff0, 0xfffe, 100, b"")
            .send_big(0, Kind::Stdout, 0xf5, 150)
            .send_big(1, Kind::Stderr, 0xf6, 60000)
            .drain(DrainAs::Invoke)
            .send(2, Kind::Stdout, b"more")
            .drain(DrainAs::Salvage)
            .check()
            .bytes(),
        // A descriptor chain looping on itself.
        Program::new(0, 0, 100, b"")
            .desc(true, 0, TX_BUF_ADDR, 64, F_NEXT, 0)
            .write_msg(TX_BUF_ADDR, Kind::Stdout, b"x")
            .post(true, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
        // An indirect table in the host-built page tables.
        Program::new(0, 0, 100, b"")
            .desc(true, 0, PML4_ADDR, 16, F_INDIRECT, 0)
            .post(true, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
        // An rx descriptor over the tx rings; a huge avail index.
        Program::new(0, 0, 100, b"")
            .desc(false, 0, TX_DESC_ADDR, 0x1000, F_WRITE, 0)
            .post(false, 0)
            .push_stdin()
            .avail_idx(true, 0x8000)
            .drain(DrainAs::Invoke)
            .bytes(),
        // Output appended to a message the host has not consumed.
        Program::new(0, 0, 0x100, b"")
            .send(0, Kind::Stdout, b"ab")
            .poke(TX_BUF_ADDR + 4, &4u32.to_le_bytes())
            .poke(TX_BUF_ADDR + 10, b"cd")
            .desc(true, 0, TX_BUF_ADDR, 12, 0, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
        // A valid descriptor reached through an indirect one (the table is
        // the ring's own): the ABI has no indirect descriptors.
        Program::new(0, 0, 100, b"")
            .send(1, Kind::Stdout, b"hi")
            .desc(true, 0, TX_DESC_ADDR + 16, 16, F_INDIRECT, 0)
            .post(true, 0)
            .drain(DrainAs::Invoke)
            .bytes(),
    ];
    seeds.push(boot().avail_idx(false, 40).feed(true).bytes());
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::channel::{run, Report};

    #[test]
    fn the_seeds_exercise_the_channel() {
        let reports: Vec<Report> = seeds().iter().map(|s| run(s)).collect();
        assert_eq!(reports[0].stdout, b"hello\n");
        assert_eq!(reports[0].stderr, b"oops\n");
        assert_eq!(reports[0].delivered, 4);
        assert_eq!(reports[0].pushed, 1);
        assert_eq!(
            reports[1].pushed, 4,
            "a chunk and EOF, then EOF for each request"
        );
        assert_eq!(reports[2].stdout.len(), 150);
        assert_eq!(reports[2].stderr.len(), 50, "up to the limit exactly");
        assert_eq!(reports[6].stdout, b"abcd");
        assert_eq!(reports[7].stdout, b"hi");
        for i in [3, 4, 5, 7] {
            let r = &reports[i];
            assert!(r.rejected > 0, "seed {i} is an attack the host must reject");
        }
    }

    /// Writes [`seeds`] to `fuzz/seeds/guest_channel/` (run with
    /// `--ignored` after changing them).
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/guest_channel");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
}
