//! Attaching the program to interfaces, pinned links that outlive a
//! daemon, and detaching.

use super::*;

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
    /// A previous daemon's pinned attachment, its program replaced
    /// atomically by this one's (the mode it was attached in is kept).
    Adopted,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
            AttachedMode::Adopted => "adopted",
        })
    }
}

pub struct Attachment {
    pub ifname: String,
    pub ifindex: u32,
    pub mode: AttachedMode,
    link: LinkHold,
}

pub(super) fn link_pin(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("link_{ifname}"))
}

impl Fastpath {
    /// Attaches to `ifname` (resolved in the calling thread's network
    /// namespace). Native falls back to generic with a warning.
    pub fn attach(&mut self, ifname: &str, setting: XdpSetting) -> Result<AttachedMode> {
        let ifindex = ifindex(ifname)?;
        if let Some(pin) = self.pin_dir.as_ref().map(|d| link_pin(d, ifname)) {
            if pin.exists() {
                // A previous daemon left its program answering here: swap
                // ours in with one bpf_link_update, no gap.
                let fd: FdLink = PinnedLink::from_pin(&pin)
                    .with_context(|| format!("opening pinned link {}", pin.display()))?
                    .into();
                let link = XdpLink::try_from(fd).context("pinned link is not an XDP link")?;
                let id = self
                    .program_mut()
                    .attach_to_link(link)
                    .with_context(|| format!("replacing the program on {ifname}"))?;
                let fd = FdLink::try_from(self.program_mut().take_link(id)?)?;
                self.attachments.push(Attachment {
                    ifname: ifname.to_string(),
                    ifindex,
                    mode: AttachedMode::Adopted,
                    link: LinkHold::Pinned { fd, path: pin },
                });
                return Ok(AttachedMode::Adopted);
            }
        }
        let (link, mode) = match setting {
            XdpSetting::Off => bail!("XDP is off for {ifname}"),
            XdpSetting::Generic => (
                self.program_mut()
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP (generic) to {ifname}"))?,
                AttachedMode::Generic,
            ),
            XdpSetting::Native => match self
                .program_mut()
                .attach_to_if_index(ifindex, XdpMode::Driver)
            {
                Ok(link) => (link, AttachedMode::Native),
                Err(native_err) => {
                    tracing::warn!(
                        interface = ifname,
                        "native XDP unavailable ({native_err:#}); falling back to generic mode, which runs after the kernel allocated an skb and is much slower"
                    );
                    let link = self
                        .program_mut()
                        .attach_to_if_index(ifindex, XdpMode::Skb)
                        .with_context(|| format!("attaching XDP (generic) to {ifname}"))?;
                    (link, AttachedMode::Generic)
                }
            },
        };
        let link = match self.pin_dir.as_ref().map(|d| link_pin(d, ifname)) {
            Some(path) => {
                let fd = FdLink::try_from(self.program_mut().take_link(link)?)
                    .context("XDP link without a bpf_link (kernel too old to pin)")?;
                let fd: FdLink = fd
                    .pin(&path)
                    .with_context(|| format!("pinning the link at {}", path.display()))?
                    .into();
                LinkHold::Pinned { fd, path }
            }
            None => LinkHold::Owned(link),
        };
        self.attachments.push(Attachment {
            ifname: ifname.to_string(),
            ifindex,
            mode,
            link,
        });
        Ok(mode)
    }

    /// Detaches pinned links of interfaces this daemon does not serve
    /// (left by a previous daemon with another configuration): the old
    /// program must not keep answering there. Returns their names.
    pub fn detach_stale_pins(&mut self, serving: &[String]) -> Result<Vec<String>> {
        let Some(dir) = &self.pin_dir else {
            return Ok(Vec::new());
        };
        let mut stale = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(ifname) = name.strip_prefix("link_") {
                if !serving.iter().any(|s| s == ifname) {
                    std::fs::remove_file(e.path())
                        .with_context(|| format!("unpinning {}", e.path().display()))?;
                    stale.push(ifname.to_string());
                }
            }
        }
        Ok(stale)
    }

    /// Leaves the program attached and the maps pinned after this
    /// process exits (hitless restart); the next daemon adopts them.
    pub fn keep_attached(&mut self) -> Result<()> {
        if let Err(why) = self.hitless_stop() {
            bail!("{why}");
        }
        self.kept = true;
        // Closing our link fds leaves the pinned links attached.
        self.attachments.clear();
        Ok(())
    }

    /// Whether `keep_attached` would leave anything for the next daemon:
    /// `Ok` says why the pins outlive this process, `Err` why they would
    /// not, and what to do about it.
    pub fn hitless_stop(&self) -> std::result::Result<String, String> {
        let Some(dir) = &self.pin_dir else {
            return Err("no pin_dir configured: the fast path cannot outlive the daemon (set server.pin_dir or --pin-dir)".into());
        };
        crate::xdp::pins::survival(dir, self.mounted_bpffs)
            .map_err(|why| format!("{why}; to fix it, {}", crate::xdp::pins::SURVIVAL_FIX))
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Detaches from every interface and removes every pin (also done on
    /// drop, unless `keep_attached` was called).
    pub fn detach_all(&mut self) -> Result<()> {
        let attachments = std::mem::take(&mut self.attachments);
        for a in attachments {
            match a.link {
                LinkHold::Owned(id) => self
                    .program_mut()
                    .detach(id)
                    .with_context(|| format!("detaching XDP from {}", a.ifname))?,
                LinkHold::Pinned { fd, path } => {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("unpinning {}", path.display()))?;
                    // The last reference: the kernel detaches.
                    drop(fd);
                }
            }
        }
        if let Some(dir) = &self.pin_dir {
            remove_pins(dir)?;
        }
        Ok(())
    }
}
