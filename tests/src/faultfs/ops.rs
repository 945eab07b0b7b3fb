//! The FUSE operations: each done on the backing file, or refused while
//! a fault is set.

use std::{
    ffi::OsStr,
    fs::OpenOptions,
    os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt},
    sync::atomic::Ordering,
};

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::pass::{errno, spared, Pass, TTL};

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
