//! Filesystems for store faults: a size-limited tmpfs (disk full) and an
//! ext4 image on a loop device mounted `errors=remount-ro` (the kernel
//! turning a filesystem read-only under a running writer). Both are
//! mounted in the test's mount namespace before the daemon starts, so the
//! daemon's namespace (`ip netns exec` makes one) has them too; both are
//! unmounted (lazily) and removed when dropped, also while a test panics.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Mount {
    pub dir: PathBuf,
    /// Removed after unmounting (the ext4 image).
    image: Option<PathBuf>,
    mounted: bool,
}

impl Mount {
    /// A tmpfs of `size` (e.g. "8m") on `dir` (created).
    pub fn tmpfs(dir: &Path, size: &str) -> Result<Mount> {
        std::fs::create_dir_all(dir)?;
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
            &dir.display().to_string(),
        ])?;
        Ok(Mount {
            dir: dir.to_path_buf(),
            image: None,
            mounted: true,
        })
    }

    /// A fresh ext4 filesystem of `mib` MiB in a file beside `dir`, on a
    /// loop device, mounted on `dir` with errors=remount-ro.
    pub fn ext4(dir: &Path, mib: u64) -> Result<Mount> {
        std::fs::create_dir_all(dir)?;
        let image = dir.with_extension("img");
        let f = std::fs::File::create(&image)?;
        f.set_len(mib << 20)?;
        drop(f);
        let img = image.display().to_string();
        sh(&[
            "mkfs.ext4",
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &img,
        ])?;
        let mut m = Mount {
            dir: dir.to_path_buf(),
            image: Some(image),
            mounted: false,
        };
        m.mount_image()?;
        Ok(m)
    }

    /// (Re)mounts the ext4 image on `dir`.
    pub fn mount_image(&mut self) -> Result<()> {
        let img = self.image.as_ref().context("not an image")?;
        sh(&[
            "mount",
            "-o",
            "loop,errors=remount-ro",
            &img.display().to_string(),
            &self.dir.display().to_string(),
        ])?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts; for an image, waits (bounded) until its loop device is
    /// released, i.e. no mount namespace holds the filesystem any more, so
    /// the next mount is a new one.
    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            sh(&["umount", &self.dir.display().to_string()])?;
            self.mounted = false;
        }
        if let Some(img) = &self.image {
            let img = img.display().to_string();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let held = sh(&["losetup", "-j", &img])?;
                if held.trim().is_empty() {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    let who = sh(&["sh", "-c", &format!("grep -l '{}' /proc/[0-9]*/mountinfo | while read f; do p=${{f#/proc/}}; p=${{p%/mountinfo}}; echo \"$p $(cat /proc/$p/cmdline | tr '\\0' ' ')\"; done", self.dir.display())]).unwrap_or_default();
                    bail!("{img} still on a loop device 10 s after unmounting: {held}; mounted in: {who}");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `e2fsck -fy` on the unmounted image (replays the journal, repairs
    /// what an error left); the exit code e2fsck gave (0 clean, 1 fixed).
    pub fn fsck(&self) -> Result<i32> {
        let img = self.image.as_ref().context("not an image")?;
        let out = Command::new("e2fsck").arg("-fy").arg(img).output()?;
        let code = out.status.code().unwrap_or(-1);
        if !(0..=1).contains(&code) {
            bail!(
                "e2fsck {} exited {code}: {}{}",
                img.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(code)
    }

    /// The block device under `dir` ("loop3").
    pub fn device(&self) -> Result<String> {
        let src = sh(&[
            "findmnt",
            "-n",
            "-o",
            "SOURCE",
            &self.dir.display().to_string(),
        ])?;
        Ok(src.trim().trim_start_matches("/dev/").to_string())
    }

    /// What the kernel does on an ext4 error with errors=remount-ro: the
    /// filesystem turns read-only at once, open files and all (an
    /// administrator's `mount -o remount,ro` is refused while a file is
    /// open for writing).
    pub fn trigger_ext4_error(&self) -> Result<()> {
        let dev = self.device()?;
        let p = format!("/sys/fs/ext4/{dev}/trigger_fs_error");
        std::fs::write(&p, "xdhcp lab: injected error\n").with_context(|| format!("writing {p}"))
    }

    /// Mount options as the kernel shows them ("rw,relatime,...").
    pub fn options(&self) -> Result<String> {
        Ok(sh(&[
            "findmnt",
            "-n",
            "-o",
            "OPTIONS",
            &self.dir.display().to_string(),
        ])?
        .trim()
        .to_string())
    }

    /// Fills the filesystem with `name` until it refuses (ENOSPC); returns
    /// the bytes written.
    pub fn fill(&self, name: &str) -> Result<u64> {
        use std::io::Write;
        let p = self.dir.join(name);
        let mut f = std::fs::File::create(&p)?;
        let mut n = 0u64;
        for chunk in [1 << 20, 4096, 512] {
            let buf = vec![0x5au8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(e).context("filling"),
                }
            }
        }
        let _ = f.sync_all();
        Ok(n)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(img) = &self.image {
            let _ = std::fs::remove_file(img);
        }
    }
}
