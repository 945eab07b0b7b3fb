//! The daemon's local surfaces under abuse (issue 14): at the 1,024
//! descriptors a unit without LimitNOFILE gives it, thousands of idle
//! connections to the metrics port and the control socket, and oversize
//! lines, leave it answering DHCP, its API and scrapes.

use std::{process::Stdio, time::Duration};

use xdhcp_lab::daemon::DaemonLab;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
metrics_address = "127.0.0.1:9167"

[[interface]]
name = "srv0"

[options]
lease_time = 600

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.10"
end = "198.18.0.50"
"#;

/// Opens `n` idle connections to the metrics port and `n` to the control
/// socket from the server's namespace, plus one oversize control line,
/// and holds them for `secs`; prints "holding" once they are open.
const HOLDER: &str = r#"
import resource, socket, sys, time
# The holder needs its 2n descriptors whatever limit the test runs under.
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n, path, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
held = []
for i in range(n):
    for fam, addr in ((socket.AF_INET, ("127.0.0.1", 9167)), (socket.AF_UNIX, path)):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(addr)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close(); continue
        held.append(s)
big = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    big.connect(path)
    big.sendall(b"x" * (1 << 20))
except OSError:
    pass
print("holding", len(held), flush=True)
time.sleep(secs)
"#;

#[test]
fn idle_connections_and_oversize_lines_leave_dhcp_api_and_metrics_answering() {
    let mut lab = DaemonLab::new("surfaces", CONFIG, None).unwrap();
    lab.nofile = Some(1024);
    lab.start().unwrap();
    let script = lab.dir.join("holder.py");
    std::fs::write(&script, HOLDER).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script).arg("2500").arg(lab.socket()).arg("40");
    let mut holder = lab
        .srv
        .command_from(&cmd)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let held: usize = line
        .strip_prefix("holding ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(held >= 5_000, "only {held} idle connections opened");
    std::thread::sleep(Duration::from_secs(1));
    // The API answers.
    let (code, out) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0, "status under 5,000 idle connections: {out}");
    // A scrape is served.
    let scrape = lab
        .srv
        .command_from(std::process::Command::new("curl").args([
            "-sS",
            "--max-time",
            "10",
            "--retry",
            "5",
            "--retry-delay",
            "1",
            "--retry-all-errors",
            "http://127.0.0.1:9167/metrics",
        ]))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&scrape.stdout);
    assert!(
        body.contains("xdhcp_received_messages_total"),
        "scrape: {body} {}",
        String::from_utf8_lossy(&scrape.stderr)
    );
    // DHCP is answered: a real client binds.
    let _c = lab.udhcpc("$lease").unwrap();
    lab.wait_event("bound ", 0, Duration::from_secs(15));
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(lab.daemon().lines().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn a_file_at_the_control_socket_path_is_never_removed() {
    let mut lab = DaemonLab::new("sockfile", CONFIG, None).unwrap();
    std::fs::write(lab.socket(), b"operator's notes").unwrap();
    assert!(lab.start().is_err(), "serve must refuse the path");
    assert_eq!(std::fs::read(lab.socket()).unwrap(), b"operator's notes");
}
