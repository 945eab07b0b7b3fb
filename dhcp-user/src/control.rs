//! The control API: one JSON object per line over a Unix socket that only
//! root can open, in Kea's shape (`{"command": ..., "arguments": {...}}`
//! in, `{"result": 0|1|3|4, "text": ..., "arguments": ...}` out; 0 = done,
//! 1 = error, 3 = nothing found, 4 = the planes disagree: `lease4-audit`). The daemon executes commands on its
//! main task, between packets, so they see and change the same state the
//! state machine does; changes to leases go through the same commit path
//! (store first, lease map in step).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

pub const DEFAULT_SOCKET: &str = "/run/xdhcp/control.sock";

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const EMPTY: u8 = 3;
/// `lease4-audit` found disagreements between the XDP lease map and the
/// lease store (Kea's "conflict").
pub const CONFLICT: u8 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub command: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub arguments: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub result: u8,
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub arguments: Value,
}

impl Response {
    pub fn ok(text: impl Into<String>, arguments: Value) -> Response {
        Response {
            result: OK,
            text: text.into(),
            arguments,
        }
    }

    pub fn error(text: impl Into<String>) -> Response {
        Response {
            result: ERROR,
            text: text.into(),
            arguments: Value::Null,
        }
    }

    pub fn empty(text: impl Into<String>) -> Response {
        Response {
            result: EMPTY,
            text: text.into(),
            arguments: Value::Null,
        }
    }
}

/// A command waiting for the daemon's main task.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Binds the socket (replacing a stale one), root-only, and serves it:
/// each line read becomes a `Pending` on `tx`.
pub fn listen(path: &Path, tx: mpsc::Sender<Pending>) -> Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "control socket {} is in use (another xdhcp running?)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Created root-only from the start: no window where others could connect.
    // SAFETY: umask only affects this process's file creation mode.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener =
        listener.with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = AsyncBufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let response = match serde_json::from_str::<Request>(&line) {
                        Ok(request) => {
                            let (reply, rx) = oneshot::channel();
                            if tx.send(Pending { request, reply }).await.is_err() {
                                return;
                            }
                            rx.await
                                .unwrap_or_else(|_| Response::error("daemon shutting down"))
                        }
                        Err(e) => Response::error(format!("not a command: {e}")),
                    };
                    let mut out = serde_json::to_string(&response).unwrap_or_default();
                    out.push('\n');
                    if wr.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }))
}

/// One command from a client (the CLI): connect, send, read the answer.
pub fn call(socket: &Path, command: &str, arguments: Value) -> Result<Response> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is xdhcp serving? are you root?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(&Request {
        command: command.into(),
        arguments,
    })?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    serde_json::from_str(&answer).with_context(|| format!("bad answer from the daemon: {answer:?}"))
}

/// The socket path: explicit, else the default.
pub fn socket_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}
