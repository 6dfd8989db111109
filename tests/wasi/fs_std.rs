//! Exercises the WASI filesystem through Rust's `std::fs`, unchanged, in
//! the writable directory named by the first argument (which must start
//! empty), printing one line per step: what happened, or the error's kind.
//! tests/wasi_fs.rs builds it with Debian's rustc for wasm32-wasi, runs it
//! in wisp and compares with `wasmtime run`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

fn show<T: std::fmt::Debug>(what: &str, result: io::Result<T>) {
    match result {
        Ok(v) => println!("{what:<28} ok {v:?}"),
        Err(e) => println!("{what:<28} {:?}", e.kind()),
    }
}

fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn main() -> io::Result<()> {
    let base = std::env::args().nth(1).expect("usage: fs_std DIR");
    let base = Path::new(&base);
    let p = |rel: &str| base.join(rel);

    show("write", fs::write(p("a.txt"), b"hello world"));
    show("read_to_string", fs::read_to_string(p("a.txt")));
    show(
        "metadata len",
        fs::metadata(p("a.txt")).map(|m| (m.len(), m.is_file())),
    );
    let mut f = OpenOptions::new().read(true).write(true).open(p("a.txt"))?;
    show("seek end-5", f.seek(SeekFrom::End(-5)));
    let mut tail = String::new();
    show(
        "read rest",
        f.read_to_string(&mut tail).map(|_| tail.clone()),
    );
    show("seek start", f.seek(SeekFrom::Start(6)));
    show("overwrite", f.write_all(b"WORLD"));
    show("set_len 8", f.set_len(8));
    drop(f);
    show("after edits", fs::read_to_string(p("a.txt")));
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(p("log"))?;
    for line in ["one\n", "two\n"] {
        log.write_all(line.as_bytes())?;
    }
    show("appended", fs::read_to_string(p("log")));
    show(
        "create_new existing",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p("log"))
            .map(|_| ()),
    );
    show("open missing", File::open(p("missing")).map(|_| ()));

    show("create_dir_all", fs::create_dir_all(p("x/y/z")));
    show("write nested", fs::write(p("x/y/z/deep.txt"), b"deep"));
    show("create_dir existing", fs::create_dir(p("x")));
    show("remove_dir non-empty", fs::remove_dir(p("x")));
    show("read_dir x/y", names(&p("x/y")));
    show("copy", fs::copy(p("x/y/z/deep.txt"), p("copy.txt")));
    show("rename", fs::rename(p("copy.txt"), p("moved.txt")));
    show("hard_link", fs::hard_link(p("moved.txt"), p("linked.txt")));
    show("read linked", fs::read_to_string(p("linked.txt")));
    show("remove_file", fs::remove_file(p("moved.txt")));
    show("remove_dir_all", fs::remove_dir_all(p("x")));
    show("read_dir base", names(base));
    show("canonicalize-free exists", Ok(p("log").exists()));
    show(
        "escape via ..",
        fs::read(base.join("../etc/passwd")).map(|_| ()),
    );
    Ok(())
}
