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
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
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

/// One request line as the socket reads it (without its newline); pure,
/// so the fuzz target `control` runs exactly what the listener runs.
pub fn parse_request(line: &[u8]) -> Result<Request, serde_json::Error> {
    serde_json::from_slice(line)
}

/// A command waiting for the daemon's main task.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Connections served at once by an accept loop (control socket, metrics).
pub const MAX_CONNECTIONS: usize = 64;
/// Longest command line accepted (a reservation or lease command is well
/// under 1 KiB); a longer one is answered with an error and the
/// connection closed.
pub const MAX_LINE: usize = 64 * 1024;
/// A connection that sends no complete line for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// Backs an accept loop off when accepting fails (EMFILE: out of
/// descriptors), instead of spinning on the error; logs once per run of
/// failures.
#[derive(Default)]
pub struct AcceptBackoff {
    failing: bool,
}

impl AcceptBackoff {
    pub async fn failed(&mut self, what: &str, e: &std::io::Error) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!("{what}: accepting a connection failed ({e}); backing off");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pub fn ok(&mut self) {
        self.failing = false;
    }
}

/// Binds the socket (replacing a stale socket, never another file),
/// root-only, and serves it: each line read becomes a `Pending` on `tx`.
/// At most `MAX_CONNECTIONS` at once (the oldest goes), lines of at most
/// `MAX_LINE` bytes, idle connections closed after a minute.
pub fn listen(path: &Path, tx: mpsc::Sender<Pending>) -> Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "control socket path {} exists and is not a socket: not removing it (choose another server.control_socket)",
                path.display()
            );
        }
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
        let mut backoff = AcceptBackoff::default();
        let mut live = Connections::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    backoff.failed("control socket", &e).await;
                    continue;
                }
            };
            backoff.ok();
            let tx = tx.clone();
            live.add(tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = AsyncBufReader::new(rd);
                loop {
                    let mut line = Vec::new();
                    let mut limited = (&mut rd).take(MAX_LINE as u64 + 1);
                    let read = limited.read_until(b'\n', &mut line);
                    match tokio::time::timeout(IDLE, read).await {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
                        Ok(Ok(_)) => {}
                    }
                    let too_long = line.len() > MAX_LINE;
                    let response = if too_long {
                        Response::error(format!("command longer than {MAX_LINE} bytes"))
                    } else {
                        match parse_request(&line) {
                            Ok(request) => {
                                let (reply, rx) = oneshot::channel();
                                if tx.send(Pending { request, reply }).await.is_err() {
                                    return;
                                }
                                rx.await
                                    .unwrap_or_else(|_| Response::error("daemon shutting down"))
                            }
                            Err(e) => Response::error(format!("not a command: {e}")),
                        }
                    };
                    let mut out = serde_json::to_string(&response).unwrap_or_default();
                    out.push('\n');
                    if wr.write_all(out.as_bytes()).await.is_err() || too_long {
                        return;
                    }
                }
            }));
        }
    }))
}

/// The connections an accept loop serves: at most `MAX_CONNECTIONS`; a
/// newcomer beyond that closes the oldest, so idle connections, however
/// many are opened, never lock out the one that has something to say.
#[derive(Default)]
pub struct Connections {
    tasks: std::collections::VecDeque<tokio::task::JoinHandle<()>>,
}

impl Connections {
    pub fn add(&mut self, task: tokio::task::JoinHandle<()>) {
        self.tasks.retain(|t| !t.is_finished());
        while self.tasks.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = self.tasks.pop_front() {
                oldest.abort();
            }
        }
        self.tasks.push_back(task);
    }
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
