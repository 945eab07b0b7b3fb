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
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc,
    },
};

use anyhow::{Context, Result};

mod ops;
mod pass;

use pass::Pass;

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
        let fs = Pass::new(backing, root_ino, fault.clone(), refused.clone());
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
