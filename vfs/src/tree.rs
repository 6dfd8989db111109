//! The inode table: directories, files and symlinks, their link counts and
//! times, and the scratch budget owned file data counts against.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::{filetype, Errno};

/// An inode number (an index into the table).
pub type Ino = usize;

/// A file's bytes: borrowed from the files image (read-only mounts, or
/// until first written) or owned.
pub enum Data {
    /// In place in guest memory, for the VM's life.
    Static(&'static [u8]),
    /// In the agent's heap.
    Owned(Vec<u8>),
}

impl Data {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Data::Static(b) => b,
            Data::Owned(v) => v,
        }
    }
}

/// What an inode is.
pub enum Kind {
    /// Entries by name, and the parent directory (itself for a root).
    Dir {
        entries: BTreeMap<Vec<u8>, Ino>,
        parent: Ino,
    },
    /// A regular file.
    File(Data),
    /// A symbolic link's target.
    Symlink(Vec<u8>),
}

/// One inode.
pub struct Inode {
    pub kind: Kind,
    /// Which mount it belongs to (its writability, and cross-mount checks).
    pub mount: usize,
    /// Names referring to it.
    pub nlink: u64,
    /// Descriptors open on it.
    pub open: u32,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Inode {
    pub fn filetype(&self) -> u8 {
        match self.kind {
            Kind::Dir { .. } => filetype::DIRECTORY,
            Kind::File(_) => filetype::REGULAR_FILE,
            Kind::Symlink(_) => filetype::SYMBOLIC_LINK,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::Dir { entries, .. } => entries.len() as u64,
            Kind::File(data) => data.bytes().len() as u64,
            Kind::Symlink(target) => target.len() as u64,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    pub fn entries(&self) -> Result<&BTreeMap<Vec<u8>, Ino>, Errno> {
        match &self.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::Notdir),
        }
    }
}

/// The inode table.
pub struct Tree {
    nodes: Vec<Option<Inode>>,
    free: Vec<Ino>,
    /// Bytes of owned file data and names allowed, and used.
    budget: u64,
    used: u64,
}

impl Tree {
    pub fn new(budget: u64) -> Tree {
        Tree {
            nodes: Vec::new(),
            free: Vec::new(),
            budget,
            used: 0,
        }
    }

    pub fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
    }

    /// Adds an inode; its parent (for a directory) is fixed by the caller.
    pub fn add(&mut self, kind: Kind, mount: usize, now: u64) -> Ino {
        let inode = Inode {
            kind,
            mount,
            nlink: 1,
            open: 0,
            atim: now,
            mtim: now,
            ctim: now,
        };
        match self.free.pop() {
            Some(ino) => {
                self.nodes[ino] = Some(inode);
                ino
            }
            None => {
                self.nodes.push(Some(inode));
                self.nodes.len() - 1
            }
        }
    }

    pub fn get(&self, ino: Ino) -> &Inode {
        self.nodes[ino].as_ref().expect("a live inode")
    }

    pub fn get_mut(&mut self, ino: Ino) -> &mut Inode {
        self.nodes[ino].as_mut().expect("a live inode")
    }

    /// The entries of directory `ino`, mutably.
    pub fn entries_mut(&mut self, ino: Ino) -> Result<&mut BTreeMap<Vec<u8>, Ino>, Errno> {
        match &mut self.get_mut(ino).kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::Notdir),
        }
    }

    /// Frees `ino` if no name and no descriptor refers to it any more.
    pub fn release(&mut self, ino: Ino) {
        let inode = self.get(ino);
        if inode.nlink == 0 && inode.open == 0 {
            if let Some(Inode {
                kind: Kind::File(Data::Owned(v)),
                ..
            }) = &self.nodes[ino]
            {
                self.used -= v.capacity() as u64;
            }
            self.nodes[ino] = None;
            self.free.push(ino);
        }
    }

    /// Whether `ancestor` is `ino` or one of its parent directories.
    pub fn is_ancestor(&self, ancestor: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.get(ino).kind {
                Kind::Dir { parent, .. } if parent != ino => ino = parent,
                _ => return false,
            }
        }
    }

    /// The file's bytes, made owned (copied out of the image on first
    /// write) and resized to at least `min_len`, within the budget.
    pub fn file_mut(&mut self, ino: Ino, min_len: usize) -> Result<&mut Vec<u8>, Errno> {
        let (budget, used) = (self.budget, &mut self.used);
        let inode = self.nodes[ino].as_mut().expect("a live inode");
        let Kind::File(data) = &mut inode.kind else {
            return Err(Errno::Isdir);
        };
        if let Data::Static(bytes) = *data {
            let mut owned = Vec::new();
            reserve(&mut owned, bytes.len().max(min_len), budget, used)?;
            owned.extend_from_slice(bytes);
            *data = Data::Owned(owned);
        }
        let Data::Owned(v) = data else {
            unreachable!("made owned above")
        };
        if min_len > v.len() {
            reserve(v, min_len - v.len(), budget, used)?;
            v.resize(min_len, 0);
        }
        Ok(v)
    }

    /// Shrinks or grows a file to exactly `len` bytes.
    pub fn set_len(&mut self, ino: Ino, len: usize) -> Result<(), Errno> {
        let v = self.file_mut(ino, len)?;
        v.truncate(len);
        Ok(())
    }
}

/// Reserves `extra` more bytes in `v`, counting the growth of its capacity
/// against the budget; `ENOSPC` past it or when the heap is exhausted.
fn reserve(v: &mut Vec<u8>, extra: usize, budget: u64, used: &mut u64) -> Result<(), Errno> {
    let before = v.capacity();
    let wanted = v.len().checked_add(extra).ok_or(Errno::Fbig)?;
    if wanted <= before {
        return Ok(());
    }
    // Doubling keeps appends amortised; never past the budget.
    let room = budget.saturating_sub(*used) + before as u64;
    let target = (wanted.max(before.saturating_mul(2)) as u64).min(room);
    if (target as usize) < wanted {
        return Err(Errno::Nospc);
    }
    v.try_reserve_exact(target as usize - v.len())
        .map_err(|_| Errno::Nospc)?;
    *used += (v.capacity() - before) as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_data_counts_against_the_budget() {
        let mut tree = Tree::new(100);
        let ino = tree.add(Kind::File(Data::Static(b"abc")), 0, 0);
        assert_eq!(tree.file_mut(ino, 0).unwrap().as_slice(), b"abc");
        assert!(tree.used >= 3);
        tree.file_mut(ino, 90).unwrap();
        assert_eq!(tree.file_mut(ino, 101).err(), Some(Errno::Nospc));
        assert_eq!(tree.get(ino).size(), 90, "a failed grow changes nothing");
        tree.get_mut(ino).nlink = 0;
        tree.release(ino);
        assert_eq!(tree.used, 0);
        // The slot is reused.
        assert_eq!(tree.add(Kind::Symlink(Vec::new()), 0, 0), ino);
    }
}
