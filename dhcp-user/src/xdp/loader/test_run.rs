//! Running the program on a crafted frame through `BPF_PROG_TEST_RUN`:
//! the harness the fixture tests and the benchmarks build on.

use super::*;

/// `struct xdp_md`, the context `BPF_PROG_TEST_RUN` takes for XDP.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

/// Verdict and output of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone)]
pub struct TestRunOutcome {
    /// XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub verdict: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean time per run, as measured by the kernel.
    pub duration: Duration,
}

pub const XDP_ABORTED: u32 = 0;

pub const XDP_DROP: u32 = 1;

pub const XDP_PASS: u32 = 2;

pub const XDP_TX: u32 = 3;

impl Fastpath {
    /// Runs the program once per `repeat` on `frame` without any interface.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
        run(self.program(), frame, None, repeat)
    }

    /// Runs the program on `frame` as if it arrived on `ifindex`.
    pub fn test_run_on(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<TestRunOutcome> {
        run(self.program(), frame, Some(ifindex), repeat)
    }

    /// Runs another loaded program of the object (see `load_object`).
    pub fn test_run_program(
        &self,
        name: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("program {name} not loaded"))?
            .try_into()?;
        run(prog, frame, Some(1), repeat)
    }
}

/// One `BPF_PROG_TEST_RUN` of `prog`; with an `ifindex`, the frame
/// arrives on that interface (a context is passed), else on none.
fn run(prog: &Xdp, frame: &[u8], ifindex: Option<u32>, repeat: u32) -> Result<TestRunOutcome> {
    // Room for the program to grow the frame (bpf_xdp_adjust_tail).
    let mut out = vec![0u8; frame.len() + 1024];
    let ctx = ifindex.map(|ingress_ifindex| XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..Default::default()
    });
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx.as_ref().map(bytemuck::bytes_of),
        repeat: repeat.max(1),
        ..Default::default()
    };
    let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    Ok(TestRunOutcome {
        verdict: r.return_value,
        frame: out,
        duration: r.duration,
    })
}
