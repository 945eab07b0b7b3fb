//! The passthrough's state: inodes and open files, and the fault that
//! decides whether a change is refused.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::{Duration, UNIX_EPOCH},
};

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo};

pub(super) const TTL: Duration = Duration::from_secs(0);

pub(super) struct Pass {
    /// FUSE inode number to backing path (1 is the root).
    inodes: Mutex<HashMap<u64, PathBuf>>,
    root_ino: u64,
    pub(super) files: Mutex<HashMap<u64, (File, bool)>>,
    next_fh: AtomicU64,
    pub(super) fault: Arc<AtomicU8>,
    refused: Arc<AtomicU64>,
}

pub(super) fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

pub(super) fn spared(p: &Path) -> bool {
    p.to_string_lossy().ends_with("-shm")
}

impl Pass {
    /// A passthrough of `backing`, whose own inode is `root_ino`.
    pub(super) fn new(
        backing: &Path,
        root_ino: u64,
        fault: Arc<AtomicU8>,
        refused: Arc<AtomicU64>,
    ) -> Pass {
        Pass {
            inodes: Mutex::new(HashMap::from([(1, backing.to_path_buf())])),
            root_ino,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            fault,
            refused,
        }
    }

    pub(super) fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        self.inodes.lock().unwrap().get(&ino.0).cloned()
    }

    /// The error a change to `p` gets now, if any.
    pub(super) fn refuse(&self, p: &Path) -> Option<Errno> {
        if spared(p) {
            return None;
        }
        let e = match self.fault.load(Ordering::SeqCst) {
            1 => Errno::EIO,
            2 => Errno::EROFS,
            _ => return None,
        };
        self.refused.fetch_add(1, Ordering::SeqCst);
        Some(e)
    }

    pub(super) fn fuse_ino(&self, md: &std::fs::Metadata) -> u64 {
        if md.ino() == self.root_ino {
            1
        } else {
            md.ino()
        }
    }

    pub(super) fn attr(&self, md: &std::fs::Metadata) -> FileAttr {
        let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
        FileAttr {
            ino: INodeNo(self.fuse_ino(md)),
            size: md.size(),
            blocks: md.blocks(),
            atime: t(md.atime(), md.atime_nsec()),
            mtime: t(md.mtime(), md.mtime_nsec()),
            ctime: t(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: if md.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (md.permissions().mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    pub(super) fn remember(&self, p: PathBuf, md: &std::fs::Metadata) {
        let ino = self.fuse_ino(md);
        if ino != 1 {
            self.inodes.lock().unwrap().insert(ino, p);
        }
    }

    pub(super) fn add_file(&self, f: File, shm: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.files.lock().unwrap().insert(fh, (f, shm));
        fh
    }

    pub(super) fn with_file<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&File, bool) -> T,
    ) -> Option<T> {
        let files = self.files.lock().unwrap();
        files.get(&fh.0).map(|(file, shm)| f(file, *shm))
    }

    pub(super) fn open_opts(flags: i32) -> OpenOptions {
        let mut o = OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_RDONLY => o.read(true),
            libc::O_WRONLY => o.write(true),
            _ => o.read(true).write(true),
        };
        o.custom_flags(flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC));
        o
    }
}
