//! The conformance set: C programs (`tests/conformance/*.c`) that call
//! every preview-1 function directly and print one line per call (the
//! call, its arguments in short, the errno or the result). Each runs in
//! wisp in three places — its scratch `/tmp`, a host directory
//! (`--dir HOST::/work`), a read-only copy (`--files HOST::/work`) — and
//! its output and exit status must be `wasmtime run`'s for the same
//! program in the same place, line for line.
//!
//! The expectations, `tests/conformance/<program>.<place>.expected`, are
//! `wasmtime run`'s output and exit status. Where the `wasmtime` CLI is
//! installed (`$WASMTIME`, `PATH` or `~/.cargo/bin`) it is run live too
//! and must still give them (`WISP_UPDATE_EXPECTED=1` rewrites them from
//! it); without it the test says so and compares with the recorded files.
//! wasmtime is given the same preopens as wisp (`/tmp` first, then
//! `/work`), so descriptor numbers agree. Its CLI has no read-only
//! directories, so for the read-only place it runs on a read-only bind
//! mount in a private mount namespace (`unshare -m`): writes fail there as
//! on any read-only file system.
//!
//! Where wisp answers differently on purpose, [`DOCUMENTED`] lists the
//! line wasmtime prints and the one wisp prints instead, and the README
//! says why; the test expects wisp's line there and fails if a listed
//! difference no longer occurs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The programs, each covering one area.
const PROGRAMS: &[&str] = &[
    "rights", "append", "sockets", "renumber", "poll", "paths", "readdir", "times", "stdio",
    "fdops", "badargs",
];

/// The cases of `badargs`, one run each: each call traps.
const BAD_ARGUMENTS: &[&str] = &[
    "path_open(P, \"x\", 0, undefined right)",
    "path_open(P, \"x\", 0, undefined inheriting right)",
    "path_open(99, \"x\", 0, undefined right)",
    "path_open(P, \"x\", undefined oflag 0x10)",
    "path_open(P, lookup 2, \"x\")",
    "path_open(P, \"x\", fdflags 0x20)",
    "path_filestat_get(P, lookup 2, \"x\")",
    "path_filestat_set_times(P, 0, \"x\", fstflags 0x10)",
    "path_link(P, lookup 2, \"x\", P, \"y\")",
    "fd_filestat_set_times(P, fstflags 0x10)",
    "fd_filestat_set_times(99, fstflags 0x10)",
    "fd_fdstat_set_flags(1, 0x20)",
    "fd_fdstat_set_rights(P, undefined right)",
    "fd_seek(P, 0, whence 3)",
    "fd_advise(P, 0, 0, advice 6)",
    "clock_res_get(4)",
    "clock_time_get(4)",
    "proc_raise(99)",
    "sock_accept(1, fdflags 0x20)",
    "sock_accept(99, fdflags 0x20)",
    "sock_recv(1, riflags 4)",
    "sock_shutdown(1, sdflags 4)",
];

/// The runs of `program` in `place`, each its arguments after the
/// directory. What `badargs` checks does not depend on the place: it runs
/// in `/tmp` only.
fn runs(program: &str, place: Place) -> Vec<Vec<&'static str>> {
    match program {
        "fdops" => vec![vec!["one", "two words"]],
        "badargs" if place == Place::Tmp => BAD_ARGUMENTS.iter().map(|c| vec![*c]).collect(),
        "badargs" => Vec::new(),
        _ => vec![Vec::new()],
    }
}

/// Where a program works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// wisp's scratch `/tmp` (for wasmtime, an empty host directory).
    Tmp,
    /// A host directory at `/work`, read-write.
    Dir,
    /// A read-only copy of a host directory at `/work`, holding what the
    /// program's `--setup` step made.
    Files,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Tmp => "tmp",
            Place::Dir => "dir",
            Place::Files => "files",
        }
    }

    /// The guest path of the directory the program works in.
    fn guest(self) -> &'static str {
        match self {
            Place::Tmp => "/tmp",
            Place::Dir | Place::Files => "/work",
        }
    }
}

/// A difference from wasmtime that wisp keeps on purpose (the README,
/// "Conformance with `wasmtime run`", says why): a line that ends in
/// `wasmtime` in wasmtime's output ends in `wisp` in wisp's, the rest of
/// it the same.
struct Documented {
    /// The program it shows in, or every program.
    program: Option<&'static str>,
    /// The places it shows in.
    places: &'static [Place],
    /// How wasmtime's line ends.
    wasmtime: &'static str,
    /// How wisp's line ends instead.
    wisp: &'static str,
}

impl Documented {
    fn covers(&self, program: &str, place: Place, wasmtime: &str, wisp: &str) -> bool {
        self.program.is_none_or(|p| p == program)
            && self.places.contains(&place)
            && wasmtime
                .strip_suffix(self.wasmtime)
                .is_some_and(|w| wisp.strip_suffix(self.wisp) == Some(w))
    }
}

const DOCUMENTED: &[Documented] = &[
    // A read-only directory: wisp answers EROFS; wasmtime on a read-only
    // mount answers EIO, its errno table lacking EROFS.
    Documented {
        program: None,
        places: &[Place::Files],
        wasmtime: "-> EIO",
        wisp: "-> EROFS",
    },
    // The files of a read-only copy have no times of their own (images
    // are reproducible): they are those of when the copy was mounted.
    Documented {
        program: Some("times"),
        places: &[Place::Files],
        wasmtime: "atim unchanged, mtim unchanged",
        wisp: "atim other, mtim other",
    },
    Documented {
        program: Some("times"),
        places: &[Place::Files],
        wasmtime: "mtim unchanged",
        wisp: "mtim other",
    },
    // A trap in a call: `wasmtime run` exits 1, `wisp run` 134 for every
    // trap.
    Documented {
        program: Some("badargs"),
        places: &[Place::Tmp],
        wasmtime: "exit 1",
        wisp: "exit 134",
    },
];

/// Output and exit status, as the expectation files hold them.
fn transcript(out: &Output) -> String {
    let status = match out.status.code() {
        Some(code) => code.to_string(),
        None => format!("{:?}", out.status),
    };
    format!("{}exit {status}\n", String::from_utf8_lossy(&out.stdout))
}

/// A program's arguments in `place`: its directory, then `own`.
fn args(place: Place, own: &[&str]) -> Vec<String> {
    let mut args = vec![place.guest().to_string()];
    args.extend(own.iter().map(|a| a.to_string()));
    args
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// wisp's transcript of `program` in `place` with arguments `own`.
fn in_wisp(name: &str, program: &Path, place: Place, own: &[&str]) -> String {
    let host = tempfile::tempdir().unwrap();
    let mount = format!("{}::/work", host.path().display());
    let mut all: Vec<String> = vec!["run".into()];
    match place {
        Place::Tmp => {}
        Place::Dir => all.extend(["--dir".into(), mount]),
        Place::Files => {
            let setup = common::run(
                &[
                    "run",
                    "--dir",
                    &mount,
                    path_str(program),
                    "/work",
                    "--setup",
                ],
                b"",
            );
            assert!(
                setup.status.success(),
                "{name}: the setup step failed in wisp: {}",
                transcript(&setup)
            );
            all.extend(["--files".into(), mount]);
        }
    }
    all.push(path_str(program).into());
    all.extend(args(place, own));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    transcript(&common::run(&refs, b""))
}

/// The `wasmtime` CLI, if there is one here.
fn wasmtime_cli() -> Option<PathBuf> {
    std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .or_else(|| wisp_bench::coldstart::process::find_program("wasmtime"))
}

/// Exit status of the shell that cannot make the read-only mount.
const NO_MOUNT: i32 = 97;

/// `wasmtime run`'s transcript of `program` in `place` with arguments
/// `own`; `None` if the place cannot be made here (a read-only mount needs
/// `unshare`).
fn in_wasmtime(
    wasmtime: &Path,
    name: &str,
    program: &Path,
    place: Place,
    own: &[&str],
) -> Option<String> {
    let scratch = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let mut run: Vec<String> = vec![
        path_str(wasmtime).into(),
        "run".into(),
        "--dir".into(),
        format!("{}::/tmp", scratch.path().display()),
    ];
    if place != Place::Tmp {
        run.extend(["--dir".into(), format!("{}::/work", host.path().display())]);
    }
    run.push(path_str(program).into());
    if place == Place::Files {
        let mut setup = Command::new(&run[0]);
        setup.args(&run[1..]).args(["/work", "--setup"]);
        let out = setup.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: the setup step failed in wasmtime: {}",
            transcript(&out)
        );
    }
    run.extend(args(place, own));
    let mut cmd = if place == Place::Files {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind -o ro \"$0\" \"$0\" || exit {NO_MOUNT}; exec \"$@\""
            ))
            .arg(host.path())
            .args(&run);
        cmd
    } else {
        let mut cmd = Command::new(&run[0]);
        cmd.args(&run[1..]);
        cmd
    };
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    if place == Place::Files && (out.status.code() == Some(NO_MOUNT) || out.status.code().is_none())
    {
        eprintln!(
            "{name}: cannot make a read-only mount here ({}); compared with the recorded output",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(transcript(&out))
}

fn expected_path(program: &str, place: Place) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(format!("{program}.{}.expected", place.name()))
}

/// What a comparison found.
#[derive(Default)]
struct Tally {
    cases: usize,
    same: usize,
    documented: usize,
    differences: Vec<String>,
}

/// Compares wisp's transcript with wasmtime's, line by line (aligned by
/// their longest common subsequence, so one extra or missing line shows
/// as that); a pair of lines that differs as [`DOCUMENTED`] says counts as
/// documented and marks the entry used.
fn compare(program: &str, place: Place, wasmtime: &str, wisp: &str, used: &mut [bool]) -> Tally {
    let (want, got): (Vec<&str>, Vec<&str>) = (wasmtime.lines().collect(), wisp.lines().collect());
    let documented = |w: &str, g: &str| {
        DOCUMENTED
            .iter()
            .position(|d| d.covers(program, place, w, g))
    };
    let alike = |w: &str, g: &str| w == g || documented(w, g).is_some();
    // lcs[i][j]: the longest alike subsequence of want[i..] and got[j..].
    let mut lcs = vec![vec![0u32; got.len() + 1]; want.len() + 1];
    for i in (0..want.len()).rev() {
        for j in (0..got.len()).rev() {
            lcs[i][j] = if alike(want[i], got[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut tally = Tally {
        cases: want.len(),
        ..Tally::default()
    };
    let at = |line: usize| format!("{program} in {} line {}", place.name(), line + 1);
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < got.len() {
        if i < want.len() && j < got.len() && alike(want[i], got[j]) {
            match documented(want[i], got[j]) {
                Some(d) if want[i] != got[j] => {
                    used[d] = true;
                    tally.documented += 1;
                }
                _ => tally.same += 1,
            }
            (i, j) = (i + 1, j + 1);
        } else if j < got.len() && (i == want.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            tally
                .differences
                .push(format!("{}: wisp printed   {}", at(i), got[j]));
            j += 1;
        } else {
            tally
                .differences
                .push(format!("{}: wasmtime printed {}", at(i), want[i]));
            i += 1;
        }
    }
    tally
}

/// Runs every program in `place` in wisp (and wasmtime, if installed) and
/// fails listing every difference that is not documented.
fn conformance(place: Place) {
    common::require_kvm();
    let wasmtime = wasmtime_cli();
    if wasmtime.is_none() {
        eprintln!(
            "no wasmtime CLI here ($WASMTIME, PATH, ~/.cargo/bin): comparing with the recorded \
             outputs of `wasmtime run` in tests/conformance/*.expected"
        );
    }
    let mut used = vec![false; DOCUMENTED.len()];
    let mut total = Tally::default();
    for &name in PROGRAMS {
        let runs = runs(name, place);
        if runs.is_empty() {
            continue;
        }
        let program = common::conformance_program(name);
        let path = expected_path(name, place);
        let live: Option<String> = wasmtime.as_deref().and_then(|w| {
            runs.iter()
                .map(|own| in_wasmtime(w, name, &program, place, own))
                .collect()
        });
        if let Some(live) = live {
            if std::env::var_os("WISP_UPDATE_EXPECTED").is_some() {
                std::fs::write(&path, &live).unwrap();
            }
            let recorded = std::fs::read_to_string(&path).unwrap_or_default();
            if live != recorded {
                total.differences.push(format!(
                    "{name} in {}: wasmtime no longer gives {} (WISP_UPDATE_EXPECTED=1 \
                     rewrites it)",
                    place.name(),
                    path.display()
                ));
            }
        }
        let expected =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got: String = runs
            .iter()
            .map(|own| in_wisp(name, &program, place, own))
            .collect();
        let tally = compare(name, place, &expected, &got, &mut used);
        eprintln!(
            "{name} in {}: {} cases, {} as wasmtime, {} documented differences, {} lines differ",
            place.name(),
            tally.cases,
            tally.same,
            tally.documented,
            tally.differences.len()
        );
        total.cases += tally.cases;
        total.same += tally.same;
        total.documented += tally.documented;
        total.differences.extend(tally.differences);
    }
    eprintln!(
        "conformance in {}: {} cases, {} as wasmtime, {} documented differences, {} lines differ",
        place.name(),
        total.cases,
        total.same,
        total.documented,
        total.differences.len()
    );
    for (d, used) in DOCUMENTED.iter().zip(&used) {
        if !used && d.places.contains(&place) {
            total.differences.push(format!(
                "documented difference no longer seen in {} of {}: wasmtime `{}`, wisp `{}`",
                place.name(),
                d.program.unwrap_or("any program"),
                d.wasmtime,
                d.wisp
            ));
        }
    }
    assert!(
        total.differences.is_empty(),
        "wisp differs from `wasmtime run`:\n{}",
        total.differences.join("\n")
    );
}

#[test]
fn conformance_in_scratch_tmp() {
    conformance(Place::Tmp);
}

#[test]
fn conformance_in_a_host_directory() {
    conformance(Place::Dir);
}

#[test]
fn conformance_in_read_only_files() {
    conformance(Place::Files);
}
