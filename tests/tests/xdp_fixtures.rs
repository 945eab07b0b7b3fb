//! The XDP program on the fixtures of tests/fixtures (every frame shape
//! the parser must handle, and requests from and around bound clients)
//! through BPF_PROG_TEST_RUN: verdict, frame out and exact counter deltas.
//! A failure lists every failing case, each with a pcap of its frames.

use dhcp_common::stat;
use xdhcp::xdp::loader::{Fastpath, VERIFIER_LIMIT, XDP_PASS, XDP_TX};
use xdhcp_lab::{
    fixture::{self, Group},
    frame::FrameSpec,
};

/// Cases in the fixture files when they were written: a file lost, or a
/// case dropped, fails here rather than going unnoticed.
const AT_LEAST: usize = 73;

fn groups() -> Vec<Group> {
    xdhcp_lab::require_lab();
    fixture::load_dir(&fixture::fixtures_dir()).expect("reading the fixtures")
}

#[test]
fn every_fixture_holds() {
    let groups = groups();
    let n = fixture::check_groups(&groups, &fixture::failures_dir())
        .unwrap_or_else(|e| panic!("{e:#}"));
    for g in &groups {
        eprintln!("{}: {} cases", g.name, g.cases.len());
    }
    assert!(
        n >= AT_LEAST,
        "{n} fixtures, fewer than the {AT_LEAST} written"
    );
}

/// The tester itself: a wrong verdict, a wrong byte and a wrong counter
/// are each reported, every failing case is listed (not the first alone),
/// a case that holds is not, and each failure's pcap holds the input, the
/// expected and the actual frame.
#[test]
fn the_tester_reports_every_wrong_case_with_its_frames() {
    let groups = groups();
    let bench = groups
        .iter()
        .find(|g| g.name == "bench")
        .expect("bench.toml");
    let right = bench.cases[0].clone();
    assert_eq!(right.verdict, XDP_TX);
    let mut wrong_verdict = right.clone();
    wrong_verdict.name = "wrong verdict".into();
    wrong_verdict.verdict = XDP_PASS;
    let mut wrong_byte = right.clone();
    wrong_byte.name = "wrong byte".into();
    let mut out = right.output.clone().expect("an output frame");
    out[300] ^= 0x01;
    wrong_byte.output = Some(out);
    let mut wrong_counter = right.clone();
    wrong_counter.name = "wrong counter".into();
    for (i, _) in wrong_counter.counters.iter_mut() {
        if *i == stat::FP_ACK_RENEWING {
            *i = stat::FP_ACK_REBINDING;
        }
    }
    let group = Group {
        name: "selftest".into(),
        state: bench.state.clone(),
        cases: vec![wrong_verdict, right.clone(), wrong_byte, wrong_counter],
    };
    let dir = std::env::temp_dir().join(format!("xdhcp-fixture-selftest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let failures = fixture::run_group(&group, &dir).unwrap();
    let names: Vec<&str> = failures.iter().map(|f| f.case.as_str()).collect();
    assert_eq!(names, ["wrong verdict", "wrong byte", "wrong counter"]);
    let errors = |i: usize| failures[i].errors.join("\n");
    assert_eq!(failures[0].errors.len(), 1, "{}", errors(0));
    assert!(
        errors(0).contains("verdict: want XDP_PASS got XDP_TX"),
        "{}",
        errors(0)
    );
    assert_eq!(failures[1].errors.len(), 1, "{}", errors(1));
    assert!(errors(1).contains("byte 300"), "{}", errors(1));
    assert_eq!(failures[2].errors.len(), 2, "{}", errors(2));
    assert!(
        errors(2).contains("counter fp_ack_renewing: want +0 got +1"),
        "{}",
        errors(2)
    );
    assert!(
        errors(2).contains("counter fp_ack_rebinding: want +1 got +0"),
        "{}",
        errors(2)
    );
    let reply = right.output.clone().unwrap();
    for (f, case) in failures
        .iter()
        .zip([&group.cases[0], &group.cases[2], &group.cases[3]])
    {
        let pcap = f.pcap.as_ref().expect("a pcap");
        assert!(f.to_string().contains(&pcap.display().to_string()), "{f}");
        let frames = fixture::read_pcap(pcap).unwrap();
        assert_eq!(
            frames,
            [
                case.input.clone(),
                case.expected_frame().to_vec(),
                reply.clone()
            ]
        );
    }

    // The whole run's report names every failing case and its pcap.
    let report = fixture::check_groups(std::slice::from_ref(&group), &dir).unwrap_err();
    let report = format!("{report:#}");
    assert!(report.starts_with("3 of 4 fixtures failed"), "{report}");
    for f in &failures {
        assert!(report.contains(&format!("{:?}", f.case)), "{report}");
        assert!(
            report.contains(&f.pcap.as_ref().unwrap().display().to_string()),
            "{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeat_runs_count_every_run() {
    xdhcp_lab::require_lab();
    let fp = Fastpath::load(false).expect("loading the XDP program (needs root and BPF)");
    let before = fp.stats().unwrap();
    let out = fp
        .test_run(
            &FrameSpec::dhcp_request([0x02, 0x00, 0x5e, 0x10, 0x00, 0x07], 1).build(),
            1000,
        )
        .unwrap();
    assert_eq!(out.verdict, XDP_PASS);
    let d = fp.stats().unwrap().since(&before);
    assert_eq!(d.get(stat::RX_FRAMES), 1000);
    assert_eq!(d.get(stat::DHCP_REQUESTS), 1000);
}

/// The verifier walks the fast path well inside its limit: a program near
/// it is refused by a kernel whose pruning differs a little (an older or
/// newer one), and every feature added to it would be a gamble.
#[test]
fn the_fast_path_leaves_the_verifier_a_fifth_of_its_limit() {
    xdhcp_lab::require_lab();
    let fp = Fastpath::load(false).expect("loading the XDP program (needs root and BPF)");
    let n = fp.verified_instructions().unwrap();
    eprintln!("verifier: {n} instructions processed of {VERIFIER_LIMIT}");
    assert!(n > 0, "the kernel reported no verified instructions");
    assert!(
        u64::from(n) * 5 <= u64::from(VERIFIER_LIMIT) * 4,
        "the verifier walked {n} instructions of its {VERIFIER_LIMIT}: less than a fifth left"
    );
}
