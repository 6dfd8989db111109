//! Images end to end: `wisp image` against real stores, OCI layouts built
//! by hand (a CNCF wasm artifact, a plain OCI image), corruption, the
//! compiled-artifact key, garbage collection, and deploying by image
//! reference through a real daemon; and hostile input — layers wisp
//! refuses, a decompression bomb, FIFOs, a held store lock — none of which
//! may hang a command or the daemon.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::daemon::{block_on, Daemon};
use common::oci::{plain_image, plant_image, raw_tar, sha, tar_gz, wasm_artifact, Layout};
use hyper::Method;
use serde_json::json;
use wisp::compile::Compiler;
use wisp_images::{ArtifactKey, Digest, FileKind, Store, Tag};

// ---------------------------------------------------------------------------
// Helpers

fn wisp(args: &[&str]) -> Output {
    common::run(args, b"")
}

/// Runs `wisp` and expects the one-line failure of bad input (exit 1)
/// mentioning `needle`.
fn fails(args: &[&str], needle: &str) -> String {
    let out = wisp(args);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "wisp {args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "wisp {args:?}: `{needle}` not in: {stderr}"
    );
    assert_eq!(
        stderr
            .trim_end()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "one error line: {stderr}"
    );
    stderr
}

/// An image configuration with nothing but what the spec requires.
fn bare_config() -> serde_json::Value {
    json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
}

/// `wisp image build examples/hello.wat --files FILES -t TAG --store
/// STORE`; the digest it prints.
fn build_hello(files: &Path, tag: &str, store: &Path) -> String {
    let out = common::ok(&[
        "image",
        "build",
        s(&hello_wat()),
        "--files",
        s(files),
        "-t",
        tag,
        "--store",
        s(store),
    ]);
    out.trim().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn hello_wat() -> PathBuf {
    common::example("hello.wat")
}

fn hello_wasm() -> Vec<u8> {
    wat::parse_file(hello_wat()).expect("examples/hello.wat")
}

fn tag(t: &str) -> Tag {
    Tag::parse(t).unwrap()
}

/// A directory of files for an image.
fn files_dir(root: &Path, big: usize) -> PathBuf {
    let dir = root.join("files");
    fs::create_dir_all(dir.join("conf")).unwrap();
    fs::write(dir.join("conf/app.toml"), b"greeting = \"hi\"\n").unwrap();
    fs::write(dir.join("index.html"), b"<h1>hi</h1>").unwrap();
    if big > 0 {
        let data: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(dir.join("big.bin"), data).unwrap();
    }
    dir
}

fn age(store: &Store, d: &Digest, secs: u64) {
    fs::File::open(store.blobs().path(d))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn build_export_import_round_trip_keeps_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let files = files_dir(dir.path(), 4096);
    let digest = build_hello(&files, "hello:1", &a);
    let digest = digest.as_str();
    // The same inputs build the same image.
    let again = build_hello(&files, "hello:2", &a);
    assert_eq!(again, digest);

    let layout_dir = dir.path().join("layout");
    let layout_tar = dir.path().join("layout.tar");
    common::ok(&[
        "image",
        "export",
        "hello:1",
        "-o",
        s(&layout_dir),
        "--store",
        s(&a),
    ]);
    common::ok(&[
        "image",
        "export",
        "hello:1",
        "-o",
        s(&layout_tar),
        "--store",
        s(&a),
    ]);
    assert!(layout_dir.join("oci-layout").is_file() && layout_dir.join("index.json").is_file());
    assert!(layout_dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file());

    let imported_dir = common::ok(&["image", "import", s(&layout_dir), "--store", s(&b)]);
    let imported_tar = common::ok(&[
        "image",
        "import",
        s(&layout_tar),
        "-t",
        "copy:1",
        "--store",
        s(&c),
    ]);
    assert_eq!(imported_dir.trim(), digest);
    assert_eq!(imported_tar.trim(), digest);

    let original = Store::open(&a).unwrap().open_image("hello:1").unwrap();
    for (store, reference) in [(&b, "hello:1"), (&c, "copy:1")] {
        let copy = Store::open(store).unwrap().open_image(reference).unwrap();
        assert_eq!(copy.digest(), original.digest());
        assert_eq!(
            copy.blob_digests(),
            original.blob_digests(),
            "manifest, config and layers"
        );
        assert_eq!(copy.manifest(), original.manifest());
        assert_eq!(copy.module().unwrap(), hello_wasm());
        let files = copy.files().unwrap();
        assert_eq!(files, original.files().unwrap());
        let paths: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(paths, ["big.bin", "conf", "conf/app.toml", "index.html"]);
    }
    // Exported again from the copy, the layout is byte for byte the same
    // but for the tag.
    let again_dir = dir.path().join("again");
    common::ok(&[
        "image",
        "export",
        "hello:1",
        "-o",
        s(&again_dir),
        "--store",
        s(&b),
    ]);
    for d in original.blob_digests() {
        let name = format!("blobs/sha256/{}", d.hex());
        assert_eq!(
            fs::read(layout_dir.join(&name)).unwrap(),
            fs::read(again_dir.join(&name)).unwrap()
        );
    }

    let ls = common::ok(&["image", "ls", "--store", s(&a)]);
    assert!(ls.contains("hello:1") && ls.contains("hello:2"), "{ls}");
    assert!(ls.contains(&digest[7..19]), "{ls}");

    // Bad input: one clear line, exit 1, nothing half-written.
    fails(
        &[
            "image",
            "export",
            "hello:1",
            "-o",
            s(&layout_dir),
            "--store",
            s(&a),
        ],
        "already exists",
    );
    fails(
        &[
            "image",
            "export",
            "nope:1",
            "-o",
            s(&dir.path().join("x")),
            "--store",
            s(&a),
        ],
        "no image `nope:1`",
    );
    assert!(!dir.path().join("x").exists());
    fails(
        &["image", "import", s(&files), "--store", s(&b)],
        "not an OCI image layout",
    );
    fails(
        &[
            "image",
            "build",
            s(&files.join("index.html")),
            "-t",
            "x:1",
            "--store",
            s(&b),
        ],
        "invalid module",
    );
    fails(
        &[
            "image",
            "build",
            s(&hello_wat()),
            "-t",
            "Bad:Tag:",
            "--store",
            s(&b),
        ],
        "invalid image reference",
    );
    fails(&["image", "rm", "nope:1", "--store", s(&b)], "no image");
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn imports_a_cncf_wasm_artifact_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&dir.path().join("layout"));
    let module = hello_wasm();
    let layer = layout.blob("application/wasm", &module);
    let config = layout.blob(
        "application/vnd.wasm.config.v0+json",
        &serde_json::to_vec(&json!({
            "created": "2024-01-01T00:00:00Z",
            "author": "someone",
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [layer["digest"]]
        }))
        .unwrap(),
    );
    let files = layout.blob(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &tar_gz(&[("www/index.html", b"<p>hi</p>")]),
    );
    let manifest = layout.manifest(
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wasm.config.v0+json",
            "config": config,
            "layers": [layer, files],
            "annotations": { "org.opencontainers.image.title": "hello" }
        }),
        Some("example.org/cncf/hello:v1"),
    );
    let store_dir = dir.path().join("store");
    let out = common::ok(&["image", "import", s(&layout.root), "--store", s(&store_dir)]);
    assert_eq!(out.trim(), manifest, "the manifest digest is kept");
    let store = Store::open(&store_dir).unwrap();
    let image = store.open_image("example.org/cncf/hello:v1").unwrap();
    assert_eq!(image.digest().to_string(), manifest);
    assert_eq!(image.module().unwrap(), module);
    assert_eq!(image.module_digest().to_string(), sha(&module));
    let files = image.files().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].kind, FileKind::File(b"<p>hi</p>".to_vec(), 0o644));
    // Its export is the same artifact.
    let out_tar = dir.path().join("out.tar");
    common::ok(&[
        "image",
        "export",
        &manifest,
        "-o",
        s(&out_tar),
        "--store",
        s(&store_dir),
    ]);
    let back = dir.path().join("back");
    assert_eq!(
        common::ok(&["image", "import", s(&out_tar), "--store", s(&back)]).trim(),
        manifest
    );

    // A wasm layer that is not wasm, or two of them, is refused whole.
    let mut bad = Layout::new(&dir.path().join("bad"));
    let not_wasm = bad.blob("application/wasm", b"not wasm at all");
    let config = bad.blob("application/vnd.wasm.config.v0+json", b"{}");
    bad.manifest(
        json!({ "schemaVersion": 2, "config": config, "layers": [not_wasm] }),
        Some("bad:1"),
    );
    let empty = dir.path().join("empty");
    fails(
        &["image", "import", s(&bad.root), "--store", s(&empty)],
        "not a WebAssembly module",
    );
    let mut two = Layout::new(&dir.path().join("two"));
    let l = two.blob("application/wasm", &module);
    let config = two.blob("application/vnd.wasm.config.v0+json", b"{}");
    two.manifest(
        json!({ "schemaVersion": 2, "config": config, "layers": [l, l] }),
        Some("two:1"),
    );
    fails(
        &["image", "import", s(&two.root), "--store", s(&empty)],
        "exactly one is needed",
    );
    let store = Store::open(&empty).unwrap();
    assert!(
        store.blobs().list().unwrap().is_empty(),
        "nothing half-written"
    );
    assert!(store.index().unwrap().is_empty());
}

#[test]
fn imports_a_plain_oci_image_holding_a_wasm_file() {
    let dir = tempfile::tempdir().unwrap();
    let module = hello_wasm();
    let mut layout = Layout::new(&dir.path().join("layout"));
    plain_image(
        &mut layout,
        &[
            ("app.wasm", &module),
            ("etc/app/config.toml", b"x = 1"),
            ("static/index.html", b"<p>"),
        ],
        None,
    );
    let tar_path = dir.path().join("plain.tar");
    layout.tar(&tar_path);
    let store_dir = dir.path().join("store");
    let out = wisp(&[
        "image",
        "import",
        s(&tar_path),
        "-t",
        "plain:converted",
        "--store",
        s(&store_dir),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("converted from the plain OCI image"));
    let store = Store::open(&store_dir).unwrap();
    let image = store.open_image("plain:converted").unwrap();
    assert_eq!(image.module().unwrap(), module);
    let paths: Vec<_> = image
        .files()
        .unwrap()
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "etc",
            "etc/app",
            "etc/app/config.toml",
            "static",
            "static/index.html"
        ],
        "the module is not among the files"
    );

    // Several .wasm files: the config's Entrypoint decides ...
    let mut hinted = Layout::new(&dir.path().join("hinted"));
    plain_image(
        &mut hinted,
        &[
            ("bin/main.wasm", &module),
            ("lib/helper.wasm", b"\0asm\x01\0\0\0"),
        ],
        Some("/bin/main.wasm"),
    );
    common::ok(&["image", "import", s(&hinted.root), "--store", s(&store_dir)]);
    let image = store.open_image("plain:1").unwrap();
    assert_eq!(image.module().unwrap(), module);
    assert_eq!(image.files().unwrap().len(), 2, "lib, lib/helper.wasm");

    // ... without one it is an error naming them, and nothing is stored.
    let mut ambiguous = Layout::new(&dir.path().join("ambiguous"));
    plain_image(
        &mut ambiguous,
        &[("a.wasm", &module), ("b.wasm", &module)],
        None,
    );
    let fresh = dir.path().join("fresh");
    fails(
        &["image", "import", s(&ambiguous.root), "--store", s(&fresh)],
        "several .wasm files (a.wasm, b.wasm)",
    );
    let mut none = Layout::new(&dir.path().join("none"));
    plain_image(&mut none, &[("readme.txt", b"hi")], None);
    fails(
        &["image", "import", s(&none.root), "--store", s(&fresh)],
        "no .wasm file",
    );
    // A layer escaping the image root is refused.
    let mut evil = Layout::new(&dir.path().join("evil"));
    let mut raw = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.as_old_mut().name[..9].copy_from_slice(b"../x.wasm");
    h.set_cksum();
    raw.append(&h, &b"x"[..]).unwrap();
    let layer = evil.blob(
        "application/vnd.oci.image.layer.v1.tar",
        &raw.into_inner().unwrap(),
    );
    evil.image(&bare_config(), &[layer], None);
    fails(
        &["image", "import", s(&evil.root), "--store", s(&fresh)],
        "`..` component",
    );
    let fresh = Store::open(&fresh).unwrap();
    assert!(fresh.blobs().list().unwrap().is_empty() && fresh.index().unwrap().is_empty());
}

#[test]
fn a_flipped_byte_in_a_stored_blob_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let files = files_dir(dir.path(), 0);
    build_hello(&files, "hello:1", &store_dir);
    let store = Store::open(&store_dir).unwrap();
    let image = store.open_image("hello:1").unwrap();
    let layer = Digest::from_oci(image.file_layers()[0].digest()).unwrap();
    let path = store.blobs().path(&layer);
    let mut bytes = fs::read(&path).unwrap();
    bytes[600] ^= 0x04;
    fs::write(&path, bytes).unwrap();

    // `ls` checks every blob: the image is reported broken (exit 1).
    let out = wisp(&["image", "ls", "--store", s(&store_dir)]);
    assert_eq!(out.status.code(), Some(1));
    let text = common::stdout(&out);
    assert!(
        text.contains("BROKEN") && text.contains(layer.hex()),
        "{text}"
    );
    assert!(common::stderr(&out).contains("re-import"));
    // The blob was quarantined, never used: files() and export fail.
    assert!(matches!(
        image.files(),
        Err(wisp_images::Error::MissingBlob(_))
    ));
    assert!(
        fs::read_dir(store.blobs().quarantine_dir())
            .unwrap()
            .count()
            == 1
    );
    fails(
        &[
            "image",
            "export",
            "hello:1",
            "-o",
            s(&dir.path().join("out.tar")),
            "--store",
            s(&store_dir),
        ],
        "re-import",
    );
    assert!(!dir.path().join("out.tar").exists());
    // Rebuilding heals it.
    build_hello(&files, "hello:1", &store_dir);
    common::ok(&["image", "ls", "--store", s(&store_dir)]);
    image.files().unwrap();
}

#[test]
fn an_artifact_key_change_forces_recompilation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let module = hello_wasm();
    let first = Compiler::new(Some(cache.clone())).unwrap();
    let artifact = first.load_or_compile(&module).unwrap();
    assert_eq!(first.compilations(), 1);
    let key = first.artifact_key().clone();
    assert_eq!(key.wisp, env!("CARGO_PKG_VERSION"));
    assert!(key.cpu.contains("sse2"), "{key:?}");

    let with_key = |key: ArtifactKey| {
        let mut c = Compiler::new(Some(cache.clone())).unwrap();
        c.set_artifact_key(key);
        let a = c.load_or_compile(&module).unwrap();
        (c.compilations(), a)
    };
    // The same build and CPU: from disk, no compilation.
    assert_eq!(with_key(key.clone()), (0, artifact.clone()));
    // Another wasmtime (its compatibility hash), another CPU feature set,
    // another wisp version: each a miss, compiled again.
    for other in [
        ArtifactKey {
            engine: "0123456789abcdef".into(),
            ..key.clone()
        },
        ArtifactKey {
            cpu: format!("{} +avx512f", key.cpu),
            ..key.clone()
        },
        ArtifactKey {
            wisp: "9.9.9".into(),
            ..key.clone()
        },
    ] {
        assert_eq!(with_key(other.clone()).0, 1, "{other:?}");
        assert_eq!(with_key(other).0, 0, "then cached under its own key");
    }
    // The real key's artifact is still there, and it runs.
    assert_eq!(with_key(key).0, 0);
    // ... and is what `wisp run` loads.
    let out = common::wisp()
        .env("WISP_CACHE_DIR", &cache)
        .args(["run", s(&hello_wat())])
        .output()
        .unwrap();
    assert_eq!(
        common::stdout(&out),
        "hello, world!\n",
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn gc_keeps_pinned_images_and_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let module = hello_wasm();
    let mut images = Vec::new();
    for (i, name) in ["old:1", "mid:1", "new:1", "deployed:1"].iter().enumerate() {
        let d = dir.path().join(format!("files{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("data"), vec![i as u8; 100_000]).unwrap();
        images.push(store.build(&module, Some(&d), Some(&tag(name))).unwrap());
    }
    store.pin("deployed", images[3].digest()).unwrap();
    for (image, secs) in images.iter().zip([4000, 3000, 1000, 9000]) {
        age(&store, image.digest(), secs);
    }
    let (orphan, _) = store.blobs().put(&[7u8; 5000]).unwrap();

    // Without a budget only what nothing references goes.
    let out = common::ok(&["image", "gc", "--store", s(&store_dir)]);
    assert!(out.contains(&format!("removed {orphan}")), "{out}");
    assert!(out.contains("freed 4.9 KiB (1 blobs)"), "{out}");
    // A pinned image cannot be removed.
    fails(
        &["image", "rm", "deployed:1", "--store", s(&store_dir)],
        "pinned by deployed function(s) deployed",
    );

    // Under a budget for about two images: the two least recently used
    // unpinned ones go, oldest first; the pinned (and oldest) one stays.
    let out = common::ok(&[
        "image",
        "gc",
        "--max-size",
        "230K",
        "--store",
        s(&store_dir),
    ]);
    let evicted: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("evicted image "))
        .collect();
    assert_eq!(evicted, ["old:1", "mid:1"], "{out}");
    store.resolve("new:1").unwrap();
    for d in images[3].blob_digests() {
        store.blobs().verify(&d).unwrap();
    }
    let ls = common::ok(&["image", "ls", "--store", s(&store_dir)]);
    assert!(
        ls.contains("deployed:1") && ls.contains(" deployed "),
        "{ls}"
    );
    assert!(!ls.contains("old:1") && !ls.contains("mid:1"), "{ls}");

    // A budget only pinned content exceeds: everything else goes, with a
    // warning; the pinned image is whole.
    let out = wisp(&["image", "gc", "--max-size", "1K", "--store", s(&store_dir)]);
    assert!(out.status.success());
    assert!(
        common::stderr(&out).contains("more than --max-size"),
        "{}",
        common::stderr(&out)
    );
    store.resolve("new:1").unwrap_err();
    assert_eq!(
        store.open_image("deployed:1").unwrap().module().unwrap(),
        module
    );
    assert_eq!(
        store
            .open_image("deployed:1")
            .unwrap()
            .files()
            .unwrap()
            .len(),
        1
    );

    // Unpinned, it can go.
    store.unpin("deployed").unwrap();
    common::ok(&["image", "rm", "deployed:1", "--store", s(&store_dir)]);
    assert!(store.blobs().list().unwrap().is_empty());
}

/// Each kept version pins the image it was deployed from, so `gc` keeps it
/// under any budget (a retained version can always be rebuilt from its
/// files); deleting the version lets it go, a restart puts a lost pin
/// back, and deleting the function drops every pin.
#[test]
fn every_kept_version_pins_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    let store_dir = daemon.state.join("images");
    let build = |tag: &str, big: usize| {
        let files = files_dir(&dir.path().join(tag.replace(':', "-")), big);
        Digest::parse(&build_hello(&files, tag, &store_dir)).unwrap()
    };
    let (first, second) = (build("hello:1", 1000), build("hello:2", 2000));
    assert_ne!(first, second);
    for (reference, status) in [("hello:1", 201), ("hello:2", 200)] {
        let r = deploy_image(&daemon.socket, "greet", reference);
        assert_eq!(r.status, status, "{r:?}");
    }
    let store = Store::open(&store_dir).unwrap();
    let pinned = |pin: &str| store.pins().unwrap().get(pin).cloned();
    assert_eq!(pinned("greet"), Some(second.clone()));
    assert_eq!(pinned("greet@1"), Some(first.clone()));
    assert_eq!(pinned("greet@2"), Some(second.clone()));
    fails(
        &["image", "rm", "hello:1", "--store", s(&store_dir)],
        "greet@1",
    );
    common::ok(&["image", "gc", "--max-size", "0", "--store", s(&store_dir)]);
    // Both images are still whole.
    for image in [&first, &second] {
        store.image(image).unwrap().verify().unwrap();
    }

    // Version 1 goes, and its pin with it: its image can be removed.
    let client = daemon.client();
    let r = block_on(client.request(
        Method::DELETE,
        "/v1/functions/greet/versions/1",
        Bytes::new(),
    ))
    .unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(pinned("greet@1"), None);
    common::ok(&["image", "rm", "hello:1", "--store", s(&store_dir)]);
    store.image(&first).unwrap_err();

    // A pin lost in a crash comes back when the daemon starts.
    store.unpin("greet@2").unwrap();
    daemon.kill();
    let daemon = Daemon::start_in(dir.path());
    assert_eq!(pinned("greet@2"), Some(second.clone()));
    let out = wisp(&["rm", "greet", "--socket", s(&daemon.socket)]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(store.pins().unwrap().len(), 0, "{:?}", store.pins());
}

#[test]
fn deploy_by_image_reference_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path());
    let store_dir = daemon.state.join("images");
    let socket = daemon.socket.clone();
    let files = files_dir(dir.path(), 1000);
    let digest = build_hello(&files, "hello:1", &store_dir);

    common::deploy_greet_from_image(&socket, "hello:1", &digest);

    // Pinned: listed as such, not removable, kept by gc under any budget.
    let ls = common::ok(&["image", "ls", "--store", s(&store_dir)]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("hello:1") && l.contains("greet")),
        "{ls}"
    );
    fails(
        &["image", "rm", "hello:1", "--store", s(&store_dir)],
        "greet",
    );
    common::ok(&["image", "gc", "--max-size", "0", "--store", s(&store_dir)]);
    Store::open(&store_dir)
        .unwrap()
        .open_image("hello:1")
        .unwrap()
        .verify()
        .unwrap();

    // Unknown and malformed references, and a module and an image at once.
    fails(
        &[
            "deploy",
            "other",
            "--image",
            "nope:1",
            "--socket",
            s(&socket),
        ],
        "image_not_found",
    );
    fails(
        &[
            "deploy",
            "other",
            "--image",
            "Not A Ref",
            "--socket",
            s(&socket),
        ],
        "invalid image reference",
    );
    let out = wisp(&[
        "deploy",
        "other",
        s(&hello_wat()),
        "--image",
        "hello:1",
        "--socket",
        s(&socket),
    ]);
    assert_eq!(out.status.code(), Some(2), "clap refuses both");

    // After kill -9 the function comes back with its image and pin.
    daemon.kill();
    let daemon = Daemon::start_in(dir.path());
    let inspect = common::ok(&["inspect", "greet", "--socket", s(&socket)]);
    let info: wisp::api::FunctionInfo = serde_json::from_str(&inspect).unwrap();
    assert_eq!(info.image.unwrap().digest, digest);
    let out = wisp(&["invoke", "greet", "--socket", s(&socket)]);
    assert_eq!(common::stdout(&out), "hello, world!\n");

    // A corrupt module blob: the deploy is refused, the old version keeps
    // serving and keeps its pin.
    let store = Store::open(&store_dir).unwrap();
    let v2 = dir.path().join("v2.wat");
    fs::write(
        &v2,
        fs::read_to_string(hello_wat())
            .unwrap()
            .replace("\"hello, \"", "\"howdy, \""),
    )
    .unwrap();
    common::ok(&[
        "image",
        "build",
        s(&v2),
        "-t",
        "hello:2",
        "--store",
        s(&store_dir),
    ]);
    let broken = store.open_image("hello:2").unwrap();
    let path = store.blobs().path(&broken.module_digest());
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).unwrap();
    fails(
        &[
            "deploy",
            "greet",
            "--image",
            "hello:2",
            "--socket",
            s(&socket),
        ],
        "image_corrupt",
    );
    assert_eq!(
        common::stdout(&wisp(&["invoke", "greet", "--socket", s(&socket)])),
        "hello, world!\n"
    );
    assert_eq!(store.pins().unwrap()["greet"].to_string(), digest);
    // Re-built, it deploys; the pin moves.
    common::ok(&[
        "image",
        "build",
        s(&v2),
        "-t",
        "hello:2",
        "--store",
        s(&store_dir),
    ]);
    common::ok(&[
        "deploy",
        "greet",
        "--image",
        "hello:2",
        "--socket",
        s(&socket),
    ]);
    assert_eq!(
        common::stdout(&wisp(&["invoke", "greet", "--socket", s(&socket)])),
        "howdy, world!\n"
    );
    assert_eq!(store.pins().unwrap()["greet"], *broken.digest());
    // Version 1 is kept, and keeps its image.
    fails(
        &["image", "rm", "hello:1", "--store", s(&store_dir)],
        "greet@1",
    );

    // A deploy from a module drops the function's pin, not its versions';
    // a delete drops them all.
    common::ok(&["deploy", "greet", s(&hello_wat()), "--socket", s(&socket)]);
    let pins: Vec<String> = store.pins().unwrap().into_keys().collect();
    assert!(
        pins.len() == 2 && pins.iter().all(|p| p.starts_with("greet@")),
        "{pins:?}"
    );
    common::ok(&["rm", "greet", "--socket", s(&socket)]);
    assert!(store.pins().unwrap().is_empty());
    common::ok(&["image", "rm", "hello:1", "--store", s(&store_dir)]);
    common::ok(&["image", "rm", "hello:2", "--store", s(&store_dir)]);
    drop(daemon);
}

// ---------------------------------------------------------------------------
// Hostile input

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// How a child process ended, and the most memory it had resident.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
    elapsed: Duration,
}

/// Runs `cmd` to its end and fails the test, killing it, if that takes
/// longer than `timeout`: what these tests drive must never hang.
///
/// `cmd` runs under GNU time, which reports the peak memory of `cmd` alone.
/// `wait4` on a child of this test would not: a child spawned with vfork
/// (as `Command` does) takes this test process's own peak with it at exec,
/// so a test running beside a heavier one would read that one's memory.
fn finish_within(cmd: Command, timeout: Duration) -> Finished {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["--format", "%M", "--output"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let t0 = Instant::now();
    let mut child = timed
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning /usr/bin/time (Debian's `time`, which scripts/test installs)");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > timeout {
            // The whole group: time and the command under it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = t0.elapsed();
    // The last line is the figure; a line before it may say how the
    // command ended.
    let report = fs::read_to_string(report.path()).unwrap();
    let max_rss_kib = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time's report: {report:?}"));
    Finished {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        max_rss_kib,
        elapsed,
    }
}

/// `wisp args...`, which must finish within 30 s.
fn wisp_within(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = common::wisp();
    cmd.args(args).envs(env.iter().copied());
    finish_within(cmd, Duration::from_secs(30))
}

/// Checks the one-line failure of bad input (exit 1) mentioning `needle`.
fn failed(f: &Finished, needle: &str) {
    assert_eq!(f.status.code(), Some(1), "{}{}", f.stdout, f.stderr);
    assert!(f.stderr.contains(needle), "`{needle}` not in: {}", f.stderr);
    let errors = f.stderr.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(errors, 1, "one error line: {}", f.stderr);
}

/// The names in a store's blob directory.
fn blob_names(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Replaces `path` (if there) with a FIFO.
fn make_fifo(path: &Path) {
    let _ = fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// A GNU sparse file: 512 bytes of data at the end of a 1 TiB hole.
fn gnu_sparse_tar() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_path("holes").unwrap();
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(1 << 40);
    gnu.sparse[0].set_offset((1 << 40) - 512);
    gnu.sparse[0].set_length(512);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[7u8; 512][..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn import_refuses_bad_file_layers_naming_the_layer_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let module = hello_wasm();
    // A good image first (a leading `/` is stripped, as containerd does),
    // so that "unchanged" means something.
    let mut good = Layout::new(&dir.path().join("good"));
    let layer = raw_tar(&[("/etc/app.toml", Regular, b"x = 1")]);
    wasm_artifact(&mut good, &module, TAR, &layer, "good:1");
    common::ok(&["image", "import", s(&good.root), "--store", s(&store_dir)]);
    let image = Store::open(&store_dir)
        .unwrap()
        .open_image("good:1")
        .unwrap();
    let paths: Vec<_> = image.files().unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, [Path::new("etc"), Path::new("etc/app.toml")]);
    let listed = common::ok(&["image", "ls", "--store", s(&store_dir)]);
    let blobs = blob_names(&store_dir);

    use tar::EntryType::{Block, Fifo, Link, Regular, Symlink};
    let whole = raw_tar(&[("big", Regular, &[1; 5000])]);
    let mut huge = tar::Header::new_gnu();
    huge.set_size(2 << 30);
    huge.set_path("huge").unwrap();
    huge.set_cksum();
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[("../../etc/cron.d/x", Regular, b"* * * * * root sh")]),
            Some("../../etc/cron.d/x"),
            "`..` component",
        ),
        (
            "host-link",
            raw_tar(&[("passwd", Link, b"/etc/passwd")]),
            Some("passwd"),
            "hard link to `etc/passwd`, which is not an earlier regular file",
        ),
        (
            "device",
            raw_tar(&[("dev/sda", Block, b"")]),
            Some("dev/sda"),
            "is a device node",
        ),
        (
            "fifo",
            raw_tar(&[("pipe", Fifo, b"")]),
            Some("pipe"),
            "is a FIFO",
        ),
        (
            "through-symlink",
            raw_tar(&[("s", Symlink, b"/etc"), ("s/passwd", Regular, b"x")]),
            Some("s/passwd"),
            "is under `s`, which is not a directory",
        ),
        ("sparse", gnu_sparse_tar(), Some("holes"), "GNU sparse file"),
        (
            "not-tar",
            b"this is not a tar, just bytes".to_vec(),
            None,
            "is not a readable tar",
        ),
        (
            "truncated",
            whole[..2048].to_vec(),
            Some("big"),
            "is truncated",
        ),
        (
            "huge",
            huge.as_bytes().to_vec(),
            Some("huge"),
            "past 1073741824 bytes unpacked",
        ),
    ];
    for (name, layer, entry, needle) in cases {
        let mut layout = Layout::new(&dir.path().join(name));
        wasm_artifact(&mut layout, &module, TAR, &layer, "bad:1");
        let stderr = fails(
            &["image", "import", s(&layout.root), "--store", s(&store_dir)],
            needle,
        );
        assert!(
            stderr.contains(&format!("file layer {}", sha(&layer))),
            "{name}: {stderr}"
        );
        if let Some(entry) = entry {
            assert!(
                stderr.contains(&format!("entry `{entry}`")),
                "{name}: {stderr}"
            );
        }
        assert_eq!(
            common::ok(&["image", "ls", "--store", s(&store_dir)]),
            listed,
            "{name}: `ls` unchanged"
        );
        assert_eq!(blob_names(&store_dir), blobs, "{name}: no blob left");
    }
}

/// A gzip tar layer of about 1 MiB that expands to 1 GiB: 1024 files of
/// 1 MiB of zeros. Made once per target directory (it takes seconds).
fn gzip_bomb() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gzip-bomb-1GiB.tar.gz");
    if let Ok(bytes) = fs::read(&path) {
        return bytes;
    }
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::best(),
    ));
    for i in 0..1024 {
        let mut h = tar::Header::new_ustar();
        h.set_size(1 << 20);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            format!("zeros/{i:04}"),
            std::io::repeat(0).take(1 << 20),
        )
        .unwrap();
    }
    let bomb = b.into_inner().unwrap().finish().unwrap();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, &bomb).unwrap();
    fs::rename(&tmp, &path).unwrap();
    bomb
}

#[test]
fn a_gzip_bomb_is_refused_at_import_in_bounded_memory() {
    let bomb = gzip_bomb();
    assert!(bomb.len() < 2 << 20, "a ~1 MiB bomb: {}", bomb.len());
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    // As a wasm artifact's file layer (stored as it is, checked), and as
    // the layer of a plain OCI image (unpacked to convert it).
    let mut artifact = Layout::new(&dir.path().join("artifact"));
    wasm_artifact(&mut artifact, &hello_wasm(), TAR_GZIP, &bomb, "bomb:1");
    let mut plain = Layout::new(&dir.path().join("plain"));
    let layer = plain.blob(TAR_GZIP, &bomb);
    plain.image(&bare_config(), &[layer], Some("bomb:2"));
    for layout in [&artifact, &plain] {
        let f = wisp_within(
            &["image", "import", s(&layout.root), "--store", s(&store_dir)],
            &[],
        );
        failed(&f, "refused as a decompression bomb");
        assert!(f.stderr.contains(&sha(&bomb)), "{}", f.stderr);
        // Refused as it streamed in: nowhere near the 1 GiB it expands to.
        assert!(
            f.max_rss_kib < 128 << 10,
            "`wisp image import` peaked at {} MiB resident",
            f.max_rss_kib >> 10
        );
        assert!(f.elapsed < Duration::from_secs(10), "{:?}", f.elapsed);
    }
    assert!(Store::open(&store_dir).unwrap().index().unwrap().is_empty());
    assert!(blob_names(&store_dir).is_empty());
}

#[test]
fn fifos_in_a_layout_or_the_store_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let module = hello_wasm();
    let layer = raw_tar(&[("etc/app.toml", tar::EntryType::Regular, b"x = 1")]);
    common::ok(&[
        "image",
        "build",
        s(&hello_wat()),
        "-t",
        "hello:1",
        "--store",
        s(&store_dir),
    ]);
    let listed = common::ok(&["image", "ls", "--store", s(&store_dir)]);
    let blobs = blob_names(&store_dir);
    // Sources of an import: a blob, index.json, oci-layout, the tar form.
    for victim in ["blob", "index.json", "oci-layout", "tar"] {
        let mut layout = Layout::new(&dir.path().join(victim));
        wasm_artifact(&mut layout, &module, TAR, &layer, "fifo:1");
        let (src, fifo) = match victim {
            "blob" => (layout.root.clone(), layout.blob_path(&sha(&layer))),
            "tar" => {
                let tar = dir.path().join("layout.tar");
                (tar.clone(), tar)
            }
            name => (layout.root.clone(), layout.root.join(name)),
        };
        make_fifo(&fifo);
        let f = wisp_within(&["image", "import", s(&src), "--store", s(&store_dir)], &[]);
        failed(
            &f,
            &format!("{} is a FIFO, not a regular file", fifo.display()),
        );
        assert_eq!(
            common::ok(&["image", "ls", "--store", s(&store_dir)]),
            listed,
            "{victim}"
        );
        assert_eq!(blob_names(&store_dir), blobs, "{victim}");
    }
    // Files of the store: a blob (`ls` reports it), then the lock.
    let store = Store::open(&store_dir).unwrap();
    let image = store.open_image("hello:1").unwrap();
    let module_blob = store.blobs().path(&image.module_digest());
    let saved = fs::read(&module_blob).unwrap();
    make_fifo(&module_blob);
    let f = wisp_within(&["image", "ls", "--store", s(&store_dir)], &[]);
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(
        f.stdout.contains("BROKEN") && f.stdout.contains("is a FIFO"),
        "{}",
        f.stdout
    );
    let out = dir.path().join("out.tar");
    let f = wisp_within(
        &[
            "image",
            "export",
            "hello:1",
            "-o",
            s(&out),
            "--store",
            s(&store_dir),
        ],
        &[],
    );
    failed(&f, "is a FIFO, not a regular file");
    fs::remove_file(&module_blob).unwrap();
    fs::write(&module_blob, saved).unwrap();
    make_fifo(&store_dir.join("lock"));
    let f = wisp_within(&["image", "rm", "hello:1", "--store", s(&store_dir)], &[]);
    failed(&f, "lock is a FIFO, not a regular file");
    fs::remove_file(store_dir.join("lock")).unwrap();
    common::ok(&["image", "rm", "hello:1", "--store", s(&store_dir)]);
}

#[test]
fn a_held_store_lock_fails_changes_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let held = store.lock().unwrap();
    let module = hello_wat();
    let build = [
        "image",
        "build",
        s(&module),
        "-t",
        "hello:1",
        "--store",
        s(&store_dir),
    ];
    let f = wisp_within(&build, &[("WISP_IMAGE_LOCK_TIMEOUT", "300ms")]);
    failed(&f, "is busy: another wisp process has held its lock");
    assert!(f.elapsed >= Duration::from_millis(300), "{:?}", f.elapsed);
    let f = wisp_within(&build, &[("WISP_IMAGE_LOCK_TIMEOUT", "soon")]);
    failed(&f, "WISP_IMAGE_LOCK_TIMEOUT=\"soon\": not a duration");
    drop(held);
    common::ok(&build);
}

/// `PUT /v1/functions/{name}` of `{"image": reference}`, which must be
/// answered within 30 s.
fn deploy_image(socket: &Path, name: &str, reference: &str) -> wisp::client::Response {
    common::daemon::deploy_image(socket, name, reference, Duration::from_secs(30))
}

#[test]
fn bad_images_and_a_busy_store_are_refused_at_deploy_with_a_4xx_and_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in_with_env(dir.path(), &[("WISP_IMAGE_LOCK_TIMEOUT", "500ms")]);
    let store_dir = daemon.state.join("images");
    let store = Store::open(&store_dir).unwrap();
    // An image written into the store behind import's back: its blobs are
    // intact, its file layer escapes the image.
    let layer = raw_tar(&[("../../../etc/passwd", tar::EntryType::Regular, b"x")]);
    let manifest = plant_image(&store, &hello_wasm(), &layer);
    let r = deploy_image(&daemon.socket, "bad", &manifest);
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(common::daemon::code(&r), "invalid_image");
    let message = r.error().unwrap().error.message;
    assert!(
        message.contains(&format!("file layer {}", sha(&layer)))
            && message.contains("entry `../../../etc/passwd`"),
        "{message}"
    );

    // The store's lock held elsewhere: 503, retry shortly; then it deploys.
    common::ok(&[
        "image",
        "build",
        s(&hello_wat()),
        "-t",
        "hello:1",
        "--store",
        s(&store_dir),
    ]);
    let held = store.lock().unwrap();
    let r = deploy_image(&daemon.socket, "greet", "hello:1");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(common::daemon::code(&r), "image_store_busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    let r = deploy_image(&daemon.socket, "greet", "hello:1");
    assert_eq!(r.status, 201, "{r:?}");
    let out = wisp(&["invoke", "greet", "--socket", s(&daemon.socket)]);
    assert_eq!(common::stdout(&out), "hello, world!\n");
}
