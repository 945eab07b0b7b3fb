//! `xdhcp config check|default` from the outside: exit codes and messages.

use std::process::Command;

fn xdhcp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xdhcp"))
}

fn temp_config(name: &str, body: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("xdhcp-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn config_default_round_trips_through_check() {
    let out = xdhcp().args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let p = temp_config("default", &String::from_utf8(out.stdout).unwrap());
    let out = xdhcp().args(["config", "check"]).arg(&p).output().unwrap();
    let _ = std::fs::remove_file(&p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn config_check_names_file_line_and_reason() {
    let p = temp_config(
        "bad",
        "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\nmtu = 9000\n",
    );
    let out = xdhcp().args(["config", "check"]).arg(&p).output().unwrap();
    let _ = std::fs::remove_file(&p);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{}:5:", p.display())), "{err}");
    assert!(err.contains("mtu"), "{err}");
}

#[test]
fn config_check_on_missing_file_says_so() {
    let out = xdhcp()
        .args(["config", "check", "/nonexistent/xdhcp.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = xdhcp().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in ["serve", "status", "stats", "leases", "reload", "config"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
}

#[test]
fn management_commands_without_a_daemon_fail_clearly() {
    let out = xdhcp()
        .args(["status", "--socket", "/nonexistent/xdhcp.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/xdhcp.sock") && err.contains("is xdhcp serving"),
        "{err}"
    );
}

/// Non-ASCII in a hex value used to panic the parser (and so `config
/// check`, and a daemon reloading on SIGHUP).
#[test]
fn config_check_refuses_non_ascii_hex_without_panicking() {
    let p = temp_config(
        "nonascii",
        "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\n\
         [[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\n\
         [[subnet.reservation]]\nhw_address = \"02:00:00:00:0é0\"\nip = \"198.18.0.5\"\n",
    );
    let out = xdhcp().args(["config", "check"]).arg(&p).output().unwrap();
    let _ = std::fs::remove_file(&p);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("{}:8:", p.display())), "{err}");
    assert!(
        err.contains("not hex") && !err.contains("panicked"),
        "{err}"
    );
}
