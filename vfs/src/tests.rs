//! Behaviour of the whole filesystem through its WASI operations.

use alloc::vec;
use alloc::vec::Vec;

use crate::{fdflags, filetype, oflags, rights, DirEntryKind, Errno, Vfs, LOOKUP_SYMLINK_FOLLOW};

const RW: u64 = rights::FD_READ
    | rights::FD_WRITE
    | rights::FD_SEEK
    | rights::FD_TELL
    | rights::FD_FILESTAT_SET_SIZE;
const RO: u64 = rights::FD_READ | rights::FD_SEEK | rights::FD_TELL;

/// `/tmp` (fd 3, writable) and `/data` (fd 4, read-only image).
fn vfs() -> Vfs {
    let mut v = Vfs::new(1 << 20);
    assert_eq!(v.mount(b"/tmp", true), Ok(3));
    assert_eq!(v.mount(b"/data", false), Ok(4));
    v.add(4, b"sub", DirEntryKind::Dir).unwrap();
    v.add(4, b"sub/a.txt", DirEntryKind::File(b"hello"))
        .unwrap();
    v.add(4, b"link", DirEntryKind::Symlink(b"sub/a.txt"))
        .unwrap();
    v
}

fn open(v: &mut Vfs, dir: u32, path: &str, oflags: u16, rights: u64) -> Result<u32, Errno> {
    v.open(
        dir,
        LOOKUP_SYMLINK_FOLLOW,
        path.as_bytes(),
        oflags,
        rights,
        0,
        0,
    )
}

fn read_all(v: &mut Vfs, fd: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 3];
    loop {
        let n = v.read(fd, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn preopens_have_names_and_other_fds_do_not() {
    let mut v = vfs();
    assert_eq!(v.prestat(3), Ok(&b"/tmp"[..]));
    assert_eq!(v.prestat(4), Ok(&b"/data"[..]));
    assert_eq!(v.prestat(5), Err(Errno::Badf));
    let fd = open(&mut v, 4, "sub/a.txt", 0, RO).unwrap();
    assert_eq!(fd, 5);
    assert_eq!(v.prestat(fd), Err(Errno::Badf));
    assert_eq!(v.fdstat(4).unwrap().filetype, filetype::DIRECTORY);
    assert_eq!(v.fdstat(fd).unwrap().filetype, filetype::REGULAR_FILE);
}

#[test]
fn files_are_created_written_read_and_sought() {
    let mut v = vfs();
    let fd = open(&mut v, 3, "f", oflags::CREAT, RW).unwrap();
    assert_eq!(v.write(fd, b"hello "), Ok(6));
    assert_eq!(v.write(fd, b"world"), Ok(5));
    assert_eq!(v.seek(fd, 0, 1), Ok(11));
    assert_eq!(v.seek(fd, -5, 2), Ok(6));
    assert_eq!(read_all(&mut v, fd), b"world");
    assert_eq!(v.seek(fd, 0, 0), Ok(0));
    assert_eq!(read_all(&mut v, fd), b"hello world");
    assert_eq!(v.pwrite(fd, b"W", 6), Ok(1));
    let mut buf = [0u8; 5];
    assert_eq!(v.pread(fd, &mut buf, 6), Ok(5));
    assert_eq!(&buf, b"World");
    assert_eq!(v.seek(fd, -1, 0), Err(Errno::Inval));
    // Writing past the end leaves a hole of zeros.
    assert_eq!(v.pwrite(fd, b"!", 13), Ok(1));
    assert_eq!(v.filestat(fd).unwrap().size, 14);
    assert_eq!(v.set_size(fd, 5), Ok(()));
    assert_eq!(v.seek(fd, 0, 0), Ok(0));
    assert_eq!(read_all(&mut v, fd), b"hello");
    v.close(fd).unwrap();
    assert_eq!(v.close(fd), Err(Errno::Badf));

    // Exclusive creation, truncation and append.
    assert_eq!(
        open(&mut v, 3, "f", oflags::CREAT | oflags::EXCL, RW),
        Err(Errno::Exist)
    );
    let fd = v.open(3, 0, b"f", 0, RW, 0, fdflags::APPEND).unwrap();
    v.seek(fd, 0, 0).unwrap();
    v.write(fd, b"++").unwrap();
    v.seek(fd, 0, 0).unwrap();
    assert_eq!(read_all(&mut v, fd), b"hello++");
    let fd = open(&mut v, 3, "f", oflags::TRUNC, RW).unwrap();
    assert_eq!(v.filestat(fd).unwrap().size, 0);
}

#[test]
fn open_modes_and_read_only_mounts_are_enforced() {
    let mut v = vfs();
    let ro = open(&mut v, 4, "sub/a.txt", 0, RO).unwrap();
    assert_eq!(read_all(&mut v, ro), b"hello");
    assert_eq!(
        v.write(ro, b"x"),
        Err(Errno::Badf),
        "not opened for writing"
    );
    assert_eq!(open(&mut v, 4, "sub/a.txt", 0, RW), Err(Errno::Rofs));
    assert_eq!(open(&mut v, 4, "new", oflags::CREAT, RW), Err(Errno::Rofs));
    assert_eq!(v.create_dir(4, b"d"), Err(Errno::Rofs));
    assert_eq!(v.unlink(4, b"sub/a.txt"), Err(Errno::Rofs));
    assert_eq!(v.rename(4, b"sub/a.txt", 4, b"b"), Err(Errno::Rofs));
    assert_eq!(v.rename(4, b"sub/a.txt", 3, b"b"), Err(Errno::Xdev));
    // Following the symlink reads the same bytes.
    let l = open(&mut v, 4, "link", 0, RO).unwrap();
    assert_eq!(read_all(&mut v, l), b"hello");
    // Not following it: a symlink cannot be opened.
    assert_eq!(v.open(4, 0, b"link", 0, RO, 0, 0), Err(Errno::Loop));
    // Directories are not files.
    assert_eq!(open(&mut v, 4, "sub", 0, RW), Err(Errno::Isdir));
    let d = open(&mut v, 4, "sub", oflags::DIRECTORY, RO).unwrap();
    assert_eq!(v.read(d, &mut [0u8; 4]), Err(Errno::Badf));
    assert_eq!(
        open(&mut v, 4, "sub/a.txt", oflags::DIRECTORY, RO),
        Err(Errno::Notdir)
    );
    assert_eq!(open(&mut v, ro, "x", 0, RO), Err(Errno::Notdir));
    assert_eq!(open(&mut v, 99, "x", 0, RO), Err(Errno::Badf));
    // Rights are not enforced, so they cannot be changed either.
    assert_eq!(v.set_rights(ro, rights::FD_SEEK, 0), Err(Errno::Notsup));
    assert_eq!(v.set_rights(1, 0, 0), Err(Errno::Badf), "stdio");
    assert_eq!(v.set_rights(ro, 1 << 40, 0), Err(Errno::Inval));
    assert_eq!(read_all(&mut v, ro), b"", "still reads (at the end)");
}

#[test]
fn rights_asked_for_are_no_error_and_set_no_limit() {
    let mut v = vfs();
    // The preopen reopened with exactly the rights it reports, as
    // wasi-libc and Rust's std do.
    let pre = v.fdstat(3).unwrap();
    assert_eq!(pre.rights, rights::PREOPEN);
    let dot = v
        .open(3, 0, b".", oflags::DIRECTORY, pre.rights, pre.inheriting, 0)
        .unwrap();
    // Every right but writing: a directory descriptor.
    let all = rights::ALL & !rights::FD_WRITE;
    let d = v.open(3, 0, b".", oflags::DIRECTORY, all, all, 0).unwrap();
    assert_eq!(v.fdstat(d).unwrap().filetype, filetype::DIRECTORY);
    assert_eq!(
        v.open(3, 0, b".", oflags::DIRECTORY, rights::FD_WRITE, 0, 0),
        Err(Errno::Isdir),
        "a directory is never open for writing"
    );
    // A directory opened with no rights still opens files to write.
    let bare = v.open(3, 0, b".", oflags::DIRECTORY, 0, 0, 0).unwrap();
    let f = open(&mut v, bare, "f", oflags::CREAT, RW).unwrap();
    assert_eq!(v.write(f, b"x"), Ok(1));
    let stat = v.fdstat(f).unwrap();
    assert_eq!(stat.rights, stat.inheriting);
    assert_eq!(stat.rights & rights::FD_WRITE, rights::FD_WRITE);
    // Asked for nothing: open to read.
    let r = v.open(dot, 0, b"f", 0, 0, 0, 0).unwrap();
    assert_eq!(read_all(&mut v, r), b"x");
    assert_eq!(v.write(r, b"y"), Err(Errno::Badf));
    assert_eq!(v.fdstat(r).unwrap().rights & rights::FD_WRITE, 0);
    // CREAT makes it writable even without FD_WRITE.
    let w = v
        .open(3, 0, b"f", oflags::CREAT, rights::FD_READ, 0, 0)
        .unwrap();
    assert_eq!(v.write(w, b"z"), Ok(1));
    // Write-only: no reading.
    let wo = v.open(3, 0, b"f", 0, rights::FD_WRITE, 0, 0).unwrap();
    assert_eq!(v.read(wo, &mut [0u8; 1]), Err(Errno::Badf));
}

#[test]
fn appending_writes_go_to_the_end_even_with_an_offset() {
    let mut v = vfs();
    let f = v
        .open(3, 0, b"log", oflags::CREAT, RW, 0, fdflags::APPEND)
        .unwrap();
    assert_eq!(v.fdstat(f).unwrap().flags, fdflags::APPEND);
    v.write(f, b"abc").unwrap();
    assert_eq!(v.pwrite(f, b"D", 0), Ok(1), "pwrite appends, as on Linux");
    assert_eq!(v.tell(f), Ok(3), "pwrite leaves the position");
    v.write(f, b"e").unwrap();
    assert_eq!(v.tell(f), Ok(5), "write leaves it at the end");
    v.set_flags(f, 0).unwrap();
    v.pwrite(f, b"A", 0).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(v.pread(f, &mut buf, 0), Ok(5));
    assert_eq!(&buf[..5], b"AbcDe");
    assert_eq!(v.set_flags(f, fdflags::SYNC), Err(Errno::Inval));
    assert_eq!(
        v.set_flags(3, fdflags::APPEND),
        Err(Errno::Badf),
        "a directory"
    );
    assert_eq!(v.set_flags(1, 0), Err(Errno::Badf), "stdio");
}

#[test]
fn directories_list_with_cookies() {
    let mut v = vfs();
    for name in ["b", "a", "c"] {
        let fd = open(&mut v, 3, name, oflags::CREAT, RW).unwrap();
        v.close(fd).unwrap();
    }
    v.create_dir(3, b"d").unwrap();
    let mut all = vec![0u8; 4096];
    let n = v.readdir(3, 0, &mut all).unwrap();
    assert_eq!(
        names(&all[..n]),
        [".", "..", "a", "b", "c", "d"].map(|s| s.as_bytes().to_vec())
    );
    // A small buffer is filled completely (the last record cut short), and
    // the listing resumes from the cookie of the last whole record.
    let mut small = [0u8; 30];
    assert_eq!(v.readdir(3, 0, &mut small), Ok(30));
    let rest = v.readdir(3, 2, &mut all).unwrap();
    assert_eq!(
        names(&all[..rest]),
        ["a", "b", "c", "d"].map(|s| s.as_bytes().to_vec())
    );
    assert_eq!(v.readdir(3, 99, &mut all), Ok(0));
    let f = open(&mut v, 3, "a", 0, RO).unwrap();
    assert_eq!(v.readdir(f, 0, &mut all), Err(Errno::Badf));
    assert_eq!(v.readdir(0, 0, &mut all), Err(Errno::Badf));
}

/// Names of whole `dirent` records.
fn names(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while buf.len() >= 24 {
        let len = u32::from_le_bytes(buf[16..20].try_into().unwrap()) as usize;
        out.push(buf[24..24 + len].to_vec());
        buf = &buf[24 + len..];
    }
    out
}

#[test]
fn directory_operations_follow_posix() {
    let mut v = vfs();
    v.create_dir(3, b"d").unwrap();
    assert_eq!(v.create_dir(3, b"d"), Err(Errno::Exist));
    assert_eq!(v.create_dir(3, b"."), Err(Errno::Exist));
    assert_eq!(v.create_dir(3, b"x/y"), Err(Errno::Noent));
    let f = open(&mut v, 3, "d/f", oflags::CREAT, RW).unwrap();
    v.close(f).unwrap();
    assert_eq!(v.remove_dir(3, b"d"), Err(Errno::Notempty));
    assert_eq!(v.remove_dir(3, b"d/f"), Err(Errno::Notdir));
    assert_eq!(v.unlink(3, b"d"), Err(Errno::Isdir));
    assert_eq!(v.unlink(3, b"d/f/"), Err(Errno::Notdir));
    assert_eq!(v.unlink(3, b"nope"), Err(Errno::Noent));
    assert_eq!(v.path_filestat(3, 0, b"d").unwrap().nlink, 2);

    // Renames: files, over files, directories, and the forbidden ones.
    v.rename(3, b"d/f", 3, b"g").unwrap();
    assert_eq!(v.path_filestat(3, 0, b"d/f"), Err(Errno::Noent));
    let g = v.path_filestat(3, 0, b"g").unwrap();
    assert_eq!(g.filetype, filetype::REGULAR_FILE);
    v.create_dir(3, b"e").unwrap();
    assert_eq!(v.rename(3, b"d", 3, b"d/inner"), Err(Errno::Inval));
    assert_eq!(v.rename(3, b"g", 3, b"e"), Err(Errno::Isdir));
    assert_eq!(v.rename(3, b"d", 3, b"g"), Err(Errno::Notdir));
    v.rename(3, b"d", 3, b"e").unwrap(); // onto an empty directory
    assert_eq!(v.path_filestat(3, 0, b"d"), Err(Errno::Noent));
    let f = open(&mut v, 3, "e/x", oflags::CREAT, RW).unwrap();
    v.close(f).unwrap();
    v.create_dir(3, b"d").unwrap();
    assert_eq!(v.rename(3, b"d", 3, b"e"), Err(Errno::Notempty));
    v.remove_dir(3, b"d").unwrap();
    // `.` is what renameat answers EBUSY for.
    assert_eq!(v.rename(3, b"e/x", 3, b"."), Err(Errno::Busy));
    // Trailing slashes: the source must be a directory; rmdir of `d/` is
    // rmdir of `.` (EINVAL) and mkdir of `e/` is mkdir of `e`, as cap-std
    // splits them.
    assert_eq!(v.rename(3, b"e/x", 3, b"y/"), Err(Errno::Notdir));
    assert_eq!(v.remove_dir(3, b"e/"), Err(Errno::Inval));
    assert_eq!(v.create_dir(3, b"e/"), Err(Errno::Exist));
}

#[test]
fn links_and_symlinks() {
    let mut v = vfs();
    let f = open(&mut v, 3, "f", oflags::CREAT, RW).unwrap();
    v.write(f, b"data").unwrap();
    v.link(3, b"f", 3, b"hard").unwrap();
    assert_eq!(v.filestat(f).unwrap().nlink, 2);
    assert_eq!(v.link(3, b"f", 3, b"hard"), Err(Errno::Exist));
    v.create_dir(3, b"d").unwrap();
    assert_eq!(v.link(3, b"d", 3, b"d2"), Err(Errno::Perm));
    v.unlink(3, b"f").unwrap();
    // Still reachable through the other name and the open descriptor.
    let h = open(&mut v, 3, "hard", 0, RO).unwrap();
    assert_eq!(read_all(&mut v, h), b"data");
    assert_eq!(v.filestat(f).unwrap().nlink, 1);

    v.symlink(b"hard", 3, b"soft").unwrap();
    assert_eq!(v.symlink(b"x", 3, b"soft"), Err(Errno::Exist));
    let mut buf = [0u8; 16];
    assert_eq!(v.readlink(3, b"soft", &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"hard");
    assert_eq!(v.readlink(3, b"soft", &mut buf[..2]), Ok(2), "cut to fit");
    assert_eq!(v.readlink(3, b"hard", &mut buf), Err(Errno::Inval));
    assert_eq!(
        v.path_filestat(3, 0, b"soft").unwrap().filetype,
        filetype::SYMBOLIC_LINK
    );
    assert_eq!(
        v.path_filestat(3, LOOKUP_SYMLINK_FOLLOW, b"soft")
            .unwrap()
            .filetype,
        filetype::REGULAR_FILE
    );
    // No absolute targets; relative ones may point anywhere, but following
    // them out of the tree fails.
    assert_eq!(v.symlink(b"/etc/passwd", 3, b"abs"), Err(Errno::Perm));
    v.symlink(b"../../x", 3, b"up").unwrap();
    assert_eq!(open(&mut v, 3, "up", 0, RO), Err(Errno::Perm));
    v.unlink(3, b"soft").unwrap();
}

#[test]
fn renumber_and_descriptor_limits() {
    let mut v = vfs();
    let a = open(&mut v, 3, "a", oflags::CREAT, RW).unwrap();
    let b = open(&mut v, 3, "b", oflags::CREAT, RW).unwrap();
    v.write(a, b"A").unwrap();
    v.renumber(a, b).unwrap();
    assert!(!v.is_open(a));
    v.seek(b, 0, 0).unwrap();
    assert_eq!(read_all(&mut v, b), b"A");
    assert_eq!(v.renumber(a, b), Err(Errno::Badf));
    // Freed numbers are reused, the highest first, as wasmtime does.
    let c = open(&mut v, 3, "c", oflags::CREAT, RW).unwrap();
    let d = open(&mut v, 3, "d", oflags::CREAT, RW).unwrap();
    assert_eq!((c, d), (a, b + 1));
    v.close(c).unwrap();
    v.close(d).unwrap();
    assert_eq!(open(&mut v, 3, "e", oflags::CREAT, RW), Ok(d));
    assert_eq!(open(&mut v, 3, "e", 0, RW), Ok(c));
    // Stdio is in the same table: closed, its number is reused; a file
    // can take its place.
    v.close(0).unwrap();
    assert_eq!(v.stdio(0), None);
    assert_eq!(open(&mut v, 3, "e", 0, RO), Ok(0));
    assert_eq!(v.renumber(c, 1), Ok(None));
    assert_eq!(v.stdio(1), None);
    assert_eq!(v.fdstat(1).unwrap().filetype, filetype::REGULAR_FILE);
    assert_eq!(v.stdio(2), Some(crate::Stdio::Err));
    let host = crate::Foreign::preopen(7, b"/work");
    let f = v.add_foreign(host.clone()).unwrap();
    assert_eq!(v.prestat(f), Ok(&b"/work"[..]));
    assert_eq!(v.foreign(f), Some(&host));
    assert_eq!(v.fdstat(f).unwrap().filetype, filetype::DIRECTORY);
    // Renumbering over it hands back the host handle to close.
    assert_eq!(v.renumber(b, f), Ok(Some(7)));
    assert!(v.foreign(f).is_none() && !v.is_open(b));
    // Renumbering a preopen keeps it a preopen.
    let moved = open(&mut v, 3, "a", 0, RO).unwrap();
    v.renumber(4, moved).unwrap();
    assert_eq!(v.prestat(moved), Ok(&b"/data"[..]));
    assert_eq!(v.prestat(4), Err(Errno::Badf));
    let mut opened = 0;
    while open(&mut v, 3, "a", 0, RO).is_ok() {
        opened += 1;
        assert!(opened < 2000);
    }
    assert_eq!(open(&mut v, 3, "a", 0, RO), Err(Errno::Mfile));
}

#[test]
fn scratch_space_is_bounded() {
    let mut v = vfs();
    v.set_budget(1000);
    let f = open(&mut v, 3, "big", oflags::CREAT, RW).unwrap();
    assert_eq!(v.write(f, &[1u8; 600]), Ok(600));
    assert_eq!(v.write(f, &[2u8; 600]), Err(Errno::Nospc));
    assert_eq!(v.filestat(f).unwrap().size, 600);
    // Freeing the file gives the space back.
    v.close(f).unwrap();
    v.unlink(3, b"big").unwrap();
    let g = open(&mut v, 3, "again", oflags::CREAT, RW).unwrap();
    assert_eq!(v.write(g, &[3u8; 900]), Ok(900));
}

#[test]
fn times_are_set_as_asked() {
    let mut v = vfs();
    v.set_now(1000);
    let f = open(&mut v, 3, "t", oflags::CREAT, RW).unwrap();
    assert_eq!(v.filestat(f).unwrap().mtim, 1000);
    v.set_now(2000);
    v.write(f, b"x").unwrap();
    assert_eq!(v.filestat(f).unwrap().mtim, 2000);
    use crate::fstflags::*;
    v.set_times(f, 5, 6, ATIM | MTIM).unwrap();
    let s = v.filestat(f).unwrap();
    assert_eq!((s.atim, s.mtim), (5, 6));
    v.path_set_times(3, 0, b"t", 0, 0, MTIM_NOW).unwrap();
    assert_eq!(v.filestat(f).unwrap().mtim, 2000);
    assert_eq!(v.set_times(f, 0, 0, ATIM | ATIM_NOW), Err(Errno::Inval));
    assert_eq!(
        v.path_set_times(4, 0, b"sub/a.txt", 0, 0, MTIM_NOW),
        Err(Errno::Rofs)
    );
}
