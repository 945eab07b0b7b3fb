//! A FUSE passthrough filesystem that can fail: what the lab uses for
//! I/O errors, as this kernel has no device-mapper (no dm-error or
//! dm-flakey; `CONFIG_BLK_DEV_DM` is off and there are no modules).
//!
//! Files live in a backing directory; every operation goes through the
//! kernel's FUSE client to this process, which does it on the backing file
//! or, while a fault is set, refuses it: `Fault::Eio` fails writes,
//! truncations, creations, removals and fsyncs with EIO (a dying disk),
//! `Fault::ReadOnly` with EROFS (a filesystem the kernel turned
//! read-only), both clearable in place. Reads always work. SQLite's `-shm`
//! file (the WAL index, shared memory that SQLite maps) is spared: it is
//! never written back to stable storage by SQLite's design, and a
//! failed write-back of a mapped page would not reach SQLite anyway.
//!
//! The filesystem runs on a thread of the test process and is unmounted
//! (lazily) when the `FaultFs` drops, also while a test panics.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    Eio = 1,
    ReadOnly = 2,
}

pub struct FaultFs {
    session: Option<fuser::BackgroundSession>,
    pub mount: PathBuf,
    pub backing: PathBuf,
    fault: Arc<AtomicU8>,
    refused: Arc<AtomicU64>,
}

impl FaultFs {
    /// Mounts a passthrough of `backing` (created) on `mount` (created).
    pub fn mount(mount: &Path, backing: &Path) -> Result<FaultFs> {
        std::fs::create_dir_all(mount)?;
        std::fs::create_dir_all(backing)?;
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let refused = Arc::new(AtomicU64::new(0));
        let root_ino = std::fs::metadata(backing)?.ino();
        let fs = Pass {
            inodes: Mutex::new(HashMap::from([(1, backing.to_path_buf())])),
            root_ino,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            fault: fault.clone(),
            refused: refused.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("xdhcp-faultfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(fs, mount, &config).with_context(|| {
            format!("mounting the FUSE fault filesystem on {}", mount.display())
        })?;
        Ok(FaultFs {
            session: Some(session),
            mount: mount.to_path_buf(),
            backing: backing.to_path_buf(),
            fault,
            refused,
        })
    }

    pub fn set(&self, f: Fault) {
        self.fault.store(f as u8, Ordering::SeqCst);
    }

    /// Operations refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        self.set(Fault::None);
        drop(self.session.take());
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_dir_all(&self.backing);
    }
}

const TTL: Duration = Duration::from_secs(0);

struct Pass {
    /// FUSE inode number to backing path (1 is the root).
    inodes: Mutex<HashMap<u64, PathBuf>>,
    root_ino: u64,
    files: Mutex<HashMap<u64, (File, bool)>>,
    next_fh: AtomicU64,
    fault: Arc<AtomicU8>,
    refused: Arc<AtomicU64>,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn spared(p: &Path) -> bool {
    p.to_string_lossy().ends_with("-shm")
}

impl Pass {
    fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        self.inodes.lock().unwrap().get(&ino.0).cloned()
    }

    /// The error a change to `p` gets now, if any.
    fn refuse(&self, p: &Path) -> Option<Errno> {
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

    fn fuse_ino(&self, md: &std::fs::Metadata) -> u64 {
        if md.ino() == self.root_ino {
            1
        } else {
            md.ino()
        }
    }

    fn attr(&self, md: &std::fs::Metadata) -> FileAttr {
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

    fn remember(&self, p: PathBuf, md: &std::fs::Metadata) {
        let ino = self.fuse_ino(md);
        if ino != 1 {
            self.inodes.lock().unwrap().insert(ino, p);
        }
    }

    fn add_file(&self, f: File, shm: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.files.lock().unwrap().insert(fh, (f, shm));
        fh
    }

    fn with_file<T>(&self, fh: FileHandle, f: impl FnOnce(&File, bool) -> T) -> Option<T> {
        let files = self.files.lock().unwrap();
        files.get(&fh.0).map(|(file, shm)| f(file, *shm))
    }

    fn open_opts(flags: i32) -> OpenOptions {
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

impl Filesystem for Pass {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(md) => {
                self.remember(p, &md);
                reply.entry(&TTL, &self.attr(&md), Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::symlink_metadata(&p) {
            Ok(md) => reply.attr(&TTL, &self.attr(&md)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if size.is_some() || mode.is_some() {
            if let Some(e) = self.refuse(&p) {
                return reply.error(e);
            }
        }
        if let Some(size) = size {
            let r = OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(size));
            if let Err(e) = r {
                return reply.error(errno(e));
            }
        }
        if let Some(mode) = mode {
            if let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)) {
                return reply.error(errno(e));
            }
        }
        match std::fs::symlink_metadata(&p) {
            Ok(md) => reply.attr(&TTL, &self.attr(&md)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let p = dir.join(name);
        if let Some(e) = self.refuse(&p) {
            return reply.error(e);
        }
        match std::fs::remove_file(&p) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(from), Some(to)) = (self.path(parent), self.path(newparent)) else {
            return reply.error(Errno::ENOENT);
        };
        let (from, to) = (from.join(name), to.join(newname));
        if let Some(e) = self.refuse(&to) {
            return reply.error(e);
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                if let Ok(md) = std::fs::symlink_metadata(&to) {
                    self.remember(to, &md);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.path(ino) {
            Some(p) => match self.refuse(&p) {
                Some(e) => reply.error(e),
                None => reply.ok(),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY && self.fault.load(Ordering::SeqCst) == 2 {
            if let Some(e) = self.refuse(&p) {
                return reply.error(e);
            }
        }
        match Self::open_opts(flags.0).open(&p) {
            Ok(f) => {
                let fh = self.add_file(f, spared(&p));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let p = dir.join(name);
        if let Some(e) = self.refuse(&p) {
            return reply.error(e);
        }
        let mut o = Self::open_opts(flags);
        o.create(true).mode(mode & !umask);
        if flags & libc::O_EXCL != 0 {
            o.create_new(true);
        }
        if flags & libc::O_TRUNC != 0 {
            o.truncate(true);
        }
        let opened = o.open(&p).and_then(|f| f.metadata().map(|md| (f, md)));
        match opened {
            Ok((f, md)) => {
                self.remember(p.clone(), &md);
                let fh = self.add_file(f, spared(&p));
                reply.created(
                    &TTL,
                    &self.attr(&md),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.with_file(fh, |f, _| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match r {
            Some(Ok(buf)) => reply.data(&buf),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::EBADF),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Some(p) = self.path(ino) {
            if let Some(e) = self.refuse(&p) {
                return reply.error(e);
            }
        }
        match self.with_file(fh, |f, _| f.write_all_at(data, offset)) {
            Some(Ok(())) => reply.written(data.len() as u32),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::EBADF),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        if let Some(p) = self.path(ino) {
            if let Some(e) = self.refuse(&p) {
                return reply.error(e);
            }
        }
        match self.with_file(fh, |f, _| f.sync_all()) {
            Some(Ok(())) => reply.ok(),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::EBADF),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(e)),
        };
        let mut entries = vec![
            (1u64, FileType::Directory, ".".into()),
            (1u64, FileType::Directory, "..".into()),
        ];
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            let kind = if md.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            entries.push((self.fuse_ino(&md), kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}
