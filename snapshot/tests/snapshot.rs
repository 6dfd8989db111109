//! Writing and opening real snapshots, and every way opening one must fail.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use wisp_snapshot::{
    Builder, Compat, CpuFeatures, Error, Extent, FileStamp, MemoryCheck, Snapshot, PAGE_SIZE,
};

const P: usize = PAGE_SIZE as usize;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Vcpu {
    regs: [u64; 18],
    sregs: Vec<u8>,
    msrs: Vec<(u32, u64)>,
    name: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Device {
    Serial { port: u16, buffered: Vec<u8> },
    Virtio { queues: [u64; 3], features: u64 },
}

fn vcpu() -> Vcpu {
    Vcpu {
        regs: std::array::from_fn(|i| (i as u64) << 40 | 0xdead),
        sregs: (0..=255).collect(),
        msrs: vec![(0xc000_0080, 0xd01), (0x10, u64::MAX)],
        name: "vcpu0".into(),
    }
}

fn devices() -> Vec<Device> {
    vec![
        Device::Serial {
            port: 0x3f8,
            buffered: b"hello".to_vec(),
        },
        Device::Virtio {
            queues: [0x1000, 0x2000, 0x3000],
            features: 1 << 32,
        },
    ]
}

fn compat() -> Compat {
    Compat {
        wisp_version: "0.1.0".into(),
        wasmtime_version: "48.0.8".into(),
        abi_version: 1,
        agent_hash: "0123456789abcdef".into(),
    }
}

fn cpu(features: &[&str]) -> CpuFeatures {
    CpuFeatures {
        vendor: "GenuineIntel".into(),
        features: features.iter().map(|s| s.to_string()).collect(),
    }
}

/// 16 pages: data in pages 0, 2-4 and 15; pages 1 and 5-14 are zero.
fn small_memory() -> Vec<u8> {
    let mut mem = vec![0u8; 16 * P];
    mem[..P].fill(0x11);
    for (i, b) in mem[2 * P..5 * P].iter_mut().enumerate() {
        *b = i as u8 | 1;
    }
    mem[16 * P - 1] = 0xee;
    mem
}

/// A committed small snapshot at `<tempdir>/snap`.
fn small_snapshot() -> (TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("snap");
    let mut b = Builder::new(&dir).unwrap();
    b.section("vcpu", &vcpu()).unwrap();
    b.section("devices", &devices()).unwrap();
    b.section("clock", &123_456_789u64).unwrap();
    b.memory(&small_memory()).unwrap();
    b.commit(&compat(), &cpu(&["sse2", "avx2"])).unwrap();
    (parent, dir)
}

fn open(dir: &Path) -> Result<Snapshot, Error> {
    Snapshot::open(dir, &compat(), &cpu(&["sse2", "avx", "avx2", "bmi2"]))
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
}

fn xor_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
}

/// Cuts the small snapshot's memory file to 15 of its 16 pages.
fn truncate_memory(dir: &Path) {
    OpenOptions::new()
        .write(true)
        .open(dir.join("memory"))
        .unwrap()
        .set_len(15 * PAGE_SIZE)
        .unwrap();
}

#[test]
fn round_trip_with_a_sparse_64mib_memory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("snap");
    let size = 64 << 20;
    let mut mem = vec![0u8; size];
    mem[..P].fill(0xaa); // first page
    mem[10 * P..13 * P].fill(0x55); // a run of three pages
    mem[13 * P + P / 2] = 0; // (still non-zero overall)
    mem[1000 * P + 7] = 1; // one byte in an otherwise zero page
    mem[size - 1] = 0xff; // last page
    let working_set = vec![
        Extent {
            start_page: 10,
            pages: 3,
        },
        Extent {
            start_page: 0,
            pages: 2,
        },
        Extent {
            start_page: 1,
            pages: 1,
        },
    ];

    let mut b = Builder::new(&dir).unwrap();
    b.section("vcpu", &vcpu()).unwrap();
    b.section("devices", &devices()).unwrap();
    b.section("table", &[7u64; 32]).unwrap();
    b.section("empty", &()).unwrap();
    b.memory(&mem).unwrap();
    b.working_set(working_set);
    b.meta("module", "hello.wasm");
    b.commit(&compat(), &cpu(&["sse2", "avx2"])).unwrap();

    let snap = open(&dir).unwrap();
    assert_eq!(snap.section::<Vcpu>("vcpu").unwrap(), vcpu());
    assert_eq!(snap.section::<Vec<Device>>("devices").unwrap(), devices());
    assert_eq!(snap.section::<[u64; 32]>("table").unwrap(), [7u64; 32]);
    snap.section::<()>("empty").unwrap();
    assert_eq!(snap.meta("module"), Some("hello.wasm"));
    assert_eq!(snap.meta("nope"), None);
    assert_eq!(snap.dir(), dir);
    assert_eq!(snap.memory_size(), size as u64);
    let ext = |start_page, pages| Extent { start_page, pages };
    assert_eq!(snap.working_set(), [ext(0, 2), ext(10, 3)]);
    let last = size as u64 / PAGE_SIZE - 1;
    assert_eq!(
        snap.manifest().memory.extents,
        [ext(0, 1), ext(10, 3), ext(1000, 1), ext(last, 1)]
    );
    assert_eq!(snap.manifest().cpu, cpu(&["sse2", "avx2"]));

    let file = snap.memory_file();
    let meta = file.metadata().unwrap();
    assert_eq!(meta.len(), size as u64);
    assert!(
        meta.blocks() * 512 < size as u64 / 8,
        "memory file is not sparse: {} blocks",
        meta.blocks()
    );
    let mut back = vec![0u8; size];
    file.read_exact_at(&mut back, 0).unwrap();
    assert!(back == mem, "memory reads back differently");
}

#[test]
fn committing_again_replaces_the_snapshot() {
    let (parent, dir) = small_snapshot();
    let mut b = Builder::new(&dir).unwrap();
    b.section("clock", &42u64).unwrap();
    b.memory(&vec![0u8; 4 * P]).unwrap();
    b.commit(&compat(), &cpu(&[])).unwrap();

    let snap = open(&dir).unwrap();
    assert_eq!(snap.section::<u64>("clock").unwrap(), 42);
    assert!(matches!(
        snap.section::<Vcpu>("vcpu"),
        Err(Error::MissingSection(_))
    ));
    assert_eq!(snap.memory_size(), 4 * PAGE_SIZE);
    assert!(snap.manifest().memory.extents.is_empty());
    let names: Vec<_> = fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["snap"], "no temporary or old directory is left");
}

#[test]
fn small_snapshot_opens() {
    let (_parent, dir) = small_snapshot();
    let snap = open(&dir).unwrap();
    assert_eq!(snap.section::<u64>("clock").unwrap(), 123_456_789);
    let mut back = vec![0u8; 16 * P];
    snap.memory_file().read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, small_memory());
}

#[test]
fn missing_snapshot() {
    let parent = tempfile::tempdir().unwrap();
    let err = open(&parent.path().join("nope")).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert!(err.to_string().contains("manifest.json missing"), "{err}");
}

#[test]
fn bad_magic_or_manifest() {
    let (_parent, dir) = small_snapshot();
    edit_manifest(&dir, |m| m["magic"] = "firecracker".into());
    assert!(matches!(open(&dir), Err(Error::NotASnapshot { .. })));

    fs::write(dir.join("manifest.json"), "{ truncated").unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(err, Error::NotASnapshot { .. }), "{err}");
    assert!(err.to_string().contains("recreate"), "{err}");
}

#[test]
fn newer_format_version() {
    let (_parent, dir) = small_snapshot();
    edit_manifest(&dir, |m| {
        m["format_version"] = (wisp_snapshot::FORMAT_VERSION + 1).into()
    });
    assert!(matches!(
        open(&dir),
        Err(Error::Version {
            found: 2,
            supported: 1
        })
    ));
}

#[test]
fn each_compat_field_must_match() {
    let (_parent, dir) = small_snapshot();
    let cases = [
        (
            "wisp_version",
            Compat {
                wisp_version: "0.2.0".into(),
                ..compat()
            },
        ),
        (
            "wasmtime_version",
            Compat {
                wasmtime_version: "47.0.0".into(),
                ..compat()
            },
        ),
        (
            "abi_version",
            Compat {
                abi_version: 2,
                ..compat()
            },
        ),
        (
            "agent_hash",
            Compat {
                agent_hash: "fedcba".into(),
                ..compat()
            },
        ),
    ];
    for (name, expect) in cases {
        match Snapshot::open(&dir, &expect, &cpu(&["sse2", "avx2"])) {
            Err(Error::Incompatible { field, .. }) if field == name => {}
            r => panic!("{name}: {r:?}"),
        }
    }
    let mut expect = compat();
    expect.wasmtime_version = "49.0.0".into();
    let err = Snapshot::open(&dir, &expect, &cpu(&["sse2", "avx2"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "snapshot was made by wasmtime 48.0.8, this is 49.0.0: recreate the snapshot"
    );
}

#[test]
fn missing_cpu_feature() {
    let (_parent, dir) = small_snapshot();
    match Snapshot::open(&dir, &compat(), &cpu(&["sse2", "sse3"])) {
        Err(Error::MissingCpuFeatures(missing)) => assert_eq!(missing, ["avx2"]),
        r => panic!("{r:?}"),
    }
}

#[test]
fn flipped_byte_in_state() {
    let (_parent, dir) = small_snapshot();
    // The second section, `devices`, starts right after `vcpu`.
    let offset = open(&dir).unwrap().manifest().sections[1].offset;
    xor_byte(&dir.join("state.bin"), offset + 1);
    match open(&dir) {
        Err(Error::Checksum { what }) => assert_eq!(what, "section `devices`"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn truncated_state() {
    let (_parent, dir) = small_snapshot();
    let path = dir.join("state.bin");
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert!(matches!(open(&dir), Err(Error::Truncated { .. })));
}

#[test]
fn flipped_byte_in_memory() {
    let (_parent, dir) = small_snapshot();
    xor_byte(&dir.join("memory"), 3 * PAGE_SIZE + 100);
    match open(&dir) {
        Err(Error::Checksum { what }) => assert_eq!(what, "guest memory"),
        r => panic!("{r:?}"),
    }
}

/// A stamp of the memory file lets an open skip reading its data only
/// while the file is the one stamped: any write moves its change time.
#[test]
fn memory_data_is_trusted_only_while_the_file_is_unchanged() {
    let (_parent, dir) = small_snapshot();
    let host = cpu(&["sse2", "avx", "avx2", "bmi2"]);
    let checked = |check| Snapshot::open_checking(&dir, &compat(), &host, check);
    let stamp = FileStamp::of_memory_in(&dir).unwrap();
    assert_eq!(
        stamp,
        FileStamp::of(&File::open(dir.join("memory")).unwrap()).unwrap()
    );
    checked(MemoryCheck::UnlessUnchanged(stamp)).unwrap();
    // The change time has a clock's resolution: make sure it moves.
    std::thread::sleep(std::time::Duration::from_millis(20));
    xor_byte(&dir.join("memory"), 3 * PAGE_SIZE + 100);
    let changed = FileStamp::of_memory_in(&dir).unwrap();
    assert_ne!(changed, stamp);
    match checked(MemoryCheck::UnlessUnchanged(stamp)) {
        Err(Error::Checksum { what }) => assert_eq!(what, "guest memory"),
        r => panic!("a changed file must be checked in full: {r:?}"),
    }
    assert!(matches!(
        checked(MemoryCheck::Full),
        Err(Error::Checksum { .. })
    ));
    // Stamped after the change, the bad data is trusted: the stamp must
    // only ever be taken for a file a full check passed on.
    checked(MemoryCheck::UnlessUnchanged(changed)).unwrap();
    // Its length is checked whatever the stamp says.
    truncate_memory(&dir);
    let truncated = FileStamp::of_memory_in(&dir).unwrap();
    assert!(matches!(
        checked(MemoryCheck::UnlessUnchanged(truncated)),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn data_in_a_hole_of_memory() {
    let (_parent, dir) = small_snapshot();
    let file = OpenOptions::new()
        .write(true)
        .open(dir.join("memory"))
        .unwrap();
    file.write_all_at(b"x", 7 * PAGE_SIZE + 9).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("0x7009"), "{err}");
}

#[test]
fn truncated_memory() {
    let (_parent, dir) = small_snapshot();
    truncate_memory(&dir);
    assert!(matches!(open(&dir), Err(Error::Truncated { .. })));
}

#[test]
fn extents_out_of_range() {
    let (_parent, dir) = small_snapshot();
    edit_manifest(&dir, |m| {
        m["memory"]["extents"][2]["pages"] = 2.into();
    });
    assert!(matches!(open(&dir), Err(Error::Corrupt(_))));
}

#[test]
fn duplicate_section_name() {
    let (_parent, dir) = small_snapshot();
    edit_manifest(&dir, |m| {
        let sections = m["sections"].as_array_mut().unwrap();
        let first = sections[0].clone();
        sections.push(first);
    });
    match open(&dir) {
        Err(Error::DuplicateSection(name)) => assert_eq!(name, "vcpu"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn missing_section_and_wrong_type() {
    let (_parent, dir) = small_snapshot();
    let snap = open(&dir).unwrap();
    match snap.section::<u64>("timer") {
        Err(Error::MissingSection(name)) => assert_eq!(name, "timer"),
        r => panic!("{r:?}"),
    }
    // `clock` is a u64: it does not decode as a Vcpu, nor as a u8 (left-over bytes).
    assert!(matches!(
        snap.section::<Vcpu>("clock"),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        snap.section::<u8>("clock"),
        Err(Error::Decode { .. })
    ));
}
