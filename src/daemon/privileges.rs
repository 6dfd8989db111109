//! Dropping root: the daemon opens `/dev/kvm` and binds its socket as
//! root, hands its state to an unprivileged user and becomes that user
//! before it loads a single module.

use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::unistd::{chown, setgid, setgroups, setuid, Gid, Uid, User};

/// Gives `paths` (recursively) to `user` and switches the whole process to
/// it (all threads: glibc applies set*id to every thread).
pub fn drop_to(user: &str, paths: &[&Path]) -> Result<()> {
    let account = User::from_name(user)
        .with_context(|| format!("looking up user `{user}`"))?
        .with_context(|| format!("no user named `{user}`"))?;
    for path in paths {
        chown_tree(path, account.uid, account.gid)
            .with_context(|| format!("giving {} to `{user}`", path.display()))?;
    }
    setgroups(&[account.gid]).context("setgroups")?;
    setgid(account.gid).context("setgid")?;
    setuid(account.uid).context("setuid")?;
    if account.uid.as_raw() != 0 && setuid(Uid::from_raw(0)).is_ok() {
        bail!("dropped to `{user}` but could become root again");
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> Result<()> {
    chown(path, Some(uid), Some(gid))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
