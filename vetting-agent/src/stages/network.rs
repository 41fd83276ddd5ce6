//! Network: `iperf3 -J` against the orchestrator's iperf3 server (the
//! host and port of this run, from the claim), both directions (`-R` for
//! the reverse). Throughput under `min_share_of_link` of the link speed
//! fails, judged by vetting-probes against the speed of the interface that
//! reaches the orchestrator (`/sys/class/net/IF/speed`; unknown, as on
//! loopback: no share check). Error counters of that interface that grew
//! during the test fail, drops warn (`vetting_probes::verdicts::network`;
//! the counters are uploaded as `net-counters` evidence). NICs without link are reported, not
//! tested. No iperf3 server in the claim: skipped.
//!
//! A measurement that ends because the server went away is not a
//! hardware failure: the server is busy with another run's test, or the
//! orchestrator restarted and its iperf3 server (which dies with it) is
//! being started again. Then the orchestrator's end answered (refused,
//! reset, closed), so the path works; the measurement is tried again,
//! logged, with exponential backoff, within a bounded time. A path that
//! does not answer (no route, unreachable, timed out, or a client that
//! hangs until its timeout) fails at once, as does any other error.

use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use vetting_probes::parsers::iperf3;
use vetting_probes::runner::{RunError, ToolCommand};
use vetting_probes::verdicts::BeforeAfter;
use vetting_probes::verdicts::network::{judge_counters, read_counters};
use vetting_probes::{Status, Tool, Verdict};

use super::{
    Artifact, Cancelled, StageContext, StageReport, evidence_document, judged_report, measurement,
    stop_if_cancelled,
};

/// The first wait before a measurement is tried again; it doubles each
/// time, up to [`RETRY_WAIT_MAX`].
const RETRY_WAIT_FIRST: Duration = Duration::from_secs(1);
const RETRY_WAIT_MAX: Duration = Duration::from_secs(15);

/// How long a direction's measurement may keep being tried again: long
/// enough for an orchestrator restart, or for another run's two
/// measurements of `duration_secs` each to end.
pub fn retry_budget(duration_secs: u64) -> Duration {
    Duration::from_secs(120 + 4 * duration_secs.max(1))
}

/// The wait before try number `retry` (1-based) of a measurement.
pub fn retry_wait(retry: u32) -> Duration {
    RETRY_WAIT_FIRST
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(RETRY_WAIT_MAX)
}

/// Why an iperf3 measurement ended without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IperfInterruption {
    /// The server is running another run's test.
    Busy,
    /// The server's end answered but the server is gone or went away
    /// mid-test (refused, reset, closed, broken pipe): the orchestrator is
    /// restarting it. Not the network's fault.
    ServerGone,
}

/// Classifies iperf3's error message: `Some` when the measurement is worth
/// trying again, `None` for errors that may be the link's (no route,
/// unreachable, timed out) and anything not known to be transient.
pub fn classify_iperf_error(error: &str) -> Option<IperfInterruption> {
    let error = error.to_ascii_lowercase();
    // the path did not answer: possibly the link; never retried
    const PATH: [&str; 5] = [
        "no route to host",
        "network is unreachable",
        "timed out",
        "host is down",
        "host is unreachable",
    ];
    if PATH.iter().any(|marker| error.contains(marker)) {
        return None;
    }
    if error.contains("busy") {
        return Some(IperfInterruption::Busy);
    }
    const SERVER_GONE: [&str; 6] = [
        "connection refused",
        "reset by peer",
        "broken pipe",
        "closed unexpectedly",
        "server has terminated",
        "end of file",
    ];
    SERVER_GONE
        .iter()
        .any(|marker| error.contains(marker))
        .then_some(IperfInterruption::ServerGone)
}

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    let params = &context.params.network;
    let (Some(host), Some(port)) = (params.iperf_host.clone(), params.iperf_port) else {
        return Ok(StageReport::skipped(
            "the orchestrator has no iperf3 server",
        ));
    };
    let net_root = context.local.sys_root.join("class/net");
    let mut verdict = Verdict::pass();
    for (nic, state) in nics_without_link(&net_root) {
        let message = format!("{nic}: no link ({state}): not tested");
        context.log.agent(&message);
        verdict.add(Status::Pass, message);
    }
    let interface = interface_towards(&host, port);
    let link_mbps = interface
        .as_deref()
        .and_then(|name| link_speed_mbps(&net_root, name));
    match (&interface, link_mbps) {
        (Some(name), Some(speed)) => context.log.agent(format!(
            "testing through {name} at {speed} Mb/s (the orchestrator's end is not known here: judged against this end)"
        )),
        (Some(name), None) => context.log.agent(format!(
            "testing through {name}, link speed unknown: throughput is not judged against it"
        )),
        (None, _) => context
            .log
            .agent("the interface towards the orchestrator is unknown: throughput is not judged against a link speed"),
    }
    let before = interface
        .as_deref()
        .map(|name| read_counters(&net_root, name));

    let mut artifacts = Vec::new();
    let mut measurements = Vec::new();
    for (reverse, label) in [(false, "upload"), (true, "download")] {
        let mut command = ToolCommand::new("iperf3")
            .args(["-J", "-c", &host, "-p", &port.to_string(), "-t"])
            .arg(params.duration_secs.max(1).to_string())
            .timeout(Duration::from_secs(params.duration_secs.max(1) + 60));
        if reverse {
            command = command.arg("-R");
        }
        let output = match run_iperf(context, &command)? {
            Ok(output) => output,
            Err(RunError::NotFound { program }) => {
                let expected = context.params.expected.nics;
                return Ok(if expected > 0 {
                    StageReport::failed(format!(
                        "tool {program} is not installed, but the spec expects {expected} NIC(s)"
                    ))
                } else {
                    StageReport::skipped(format!("tool {program} is not installed"))
                });
            }
            Err(error) => {
                verdict.fail_with(format!("iperf3 {label}: {error}"));
                continue;
            }
        };
        let name = format!("iperf3-{label}.json");
        match iperf3::parse(&output.stdout) {
            Ok(data) => {
                if let Some(bps) = data.throughput_bps {
                    measurements.push(measurement(&format!("network.{label}_bps"), bps, "bit/s"));
                    context
                        .log
                        .agent(format!("iperf3 {label}: {:.1} Mbit/s", bps / 1e6));
                }
                if let Some(retransmits) = data.retransmits {
                    measurements.push(measurement(
                        &format!("network.{label}_retransmits"),
                        retransmits as f64,
                        "count",
                    ));
                }
                let mut direction =
                    iperf3::verdict_with_link(&data, link_mbps, &context.thresholds);
                for reason in &mut direction.reasons {
                    reason.message = format!("{label}: {}", reason.message);
                }
                verdict.merge(direction);
                artifacts.push(Artifact::new(
                    &name,
                    Some(Tool::Iperf3),
                    Some(&host),
                    output.stdout,
                ));
            }
            Err(error) => {
                verdict.fail_with(format!(
                    "iperf3 {label} gave no report ({}): {error}",
                    output.status
                ));
                artifacts.push(Artifact::new(
                    &name,
                    None,
                    Some(&host),
                    super::combined_output(&output),
                ));
            }
        }
    }

    if let (Some(name), Some(before)) = (interface.as_deref(), before) {
        let after = read_counters(&net_root, name);
        judge_counters(&mut verdict, name, &before, &after);
        let counters = BeforeAfter::new(Some(name), before, after);
        artifacts.extend(evidence_document(
            &format!("net-counters-{name}.json"),
            Tool::NetCounters,
            counters.to_json(),
            &mut verdict,
        ));
    }
    Ok(judged_report(context, verdict, artifacts, measurements))
}

/// Runs iperf3, trying again (with backoff, within [`retry_budget`])
/// while the server is busy or went away ([`classify_iperf_error`]). The
/// last output is returned when the budget is spent.
fn run_iperf(
    context: &StageContext,
    command: &ToolCommand,
) -> Result<Result<vetting_probes::runner::ToolOutput, RunError>, Cancelled> {
    let budget = retry_budget(context.params.network.duration_secs);
    let started = Instant::now();
    let mut retries = 0u32;
    loop {
        let output = match context.run_tool(command) {
            Ok(output) => output,
            Err(error) => {
                stop_if_cancelled(context, &error)?;
                return Ok(Err(error));
            }
        };
        let error = match iperf3::parse(&output.stdout) {
            Ok(data) => data.error,
            // no JSON: what iperf3 said on stderr, if anything
            Err(_) => Some(String::from_utf8_lossy(&output.stderr).trim().to_string())
                .filter(|text| !text.is_empty()),
        };
        let Some(error) = error else {
            return Ok(Ok(output));
        };
        let Some(interruption) = classify_iperf_error(&error) else {
            return Ok(Ok(output));
        };
        retries += 1;
        let wait = retry_wait(retries);
        if started.elapsed() + wait > budget {
            context.log.agent(format!(
                "iperf3: {error}: still failing after {} tries in {} s: giving up",
                retries,
                started.elapsed().as_secs()
            ));
            return Ok(Ok(output));
        }
        let why = match interruption {
            IperfInterruption::Busy => "the server is busy with another test",
            IperfInterruption::ServerGone => {
                "the server went away (the orchestrator restarting?), not a network failure"
            }
        };
        context.log.agent(format!(
            "iperf3: {error}: {why}; trying again in {} s (retry {retries})",
            wait.as_secs()
        ));
        context.sleep(wait)?;
    }
}

/// The interface whose address this host uses to reach `host:port`.
pub fn interface_towards(host: &str, port: u16) -> Option<String> {
    let target = (host, port).to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    let local: IpAddr = socket.local_addr().ok()?.ip();
    let addresses = nix::ifaddrs::getifaddrs().ok()?;
    for interface in addresses {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if ip == local {
            return Some(interface.interface_name);
        }
    }
    None
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The negotiated speed of `interface` in Mb/s, when the kernel knows it.
pub fn link_speed_mbps(net_root: &Path, interface: &str) -> Option<u64> {
    read_trimmed(&net_root.join(interface).join("speed"))
        .and_then(|speed| speed.parse::<i64>().ok())
        .filter(|&speed| speed > 0)
        .map(|speed| speed as u64)
}

/// Physical NICs whose link is not up, with their state.
pub fn nics_without_link(net_root: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(net_root) else {
        return Vec::new();
    };
    let mut down: Vec<(String, String)> = entries
        .flatten()
        .filter(|entry| entry.path().join("device").exists())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let state = read_trimmed(&entry.path().join("operstate")).unwrap_or_default();
            (state != "up").then_some((name, state))
        })
        .collect();
    down.sort();
    down
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_has_no_speed() {
        assert_eq!(interface_towards("127.0.0.1", 5201).as_deref(), Some("lo"));
        assert_eq!(link_speed_mbps(Path::new("/sys/class/net"), "lo"), None);
    }

    #[test]
    fn a_server_that_went_away_is_retried_and_a_silent_path_is_not() {
        use IperfInterruption::{Busy, ServerGone};
        for (error, expected) in [
            (
                "the server is busy running a test. try again later",
                Some(Busy),
            ),
            (
                "unable to connect to server: Connection refused",
                Some(ServerGone),
            ),
            (
                "unable to write to stream socket: Broken pipe",
                Some(ServerGone),
            ),
            (
                "unable to write to stream socket: Connection reset by peer",
                Some(ServerGone),
            ),
            (
                "unable to receive control message: Connection reset by peer",
                Some(ServerGone),
            ),
            ("control socket has closed unexpectedly", Some(ServerGone)),
            ("the server has terminated", Some(ServerGone)),
            ("unable to connect to server: No route to host", None),
            ("unable to connect to server: Network is unreachable", None),
            ("unable to connect to server: Connection timed out", None),
            ("unable to send control message: Connection timed out", None),
            (
                "unable to set TCP_CONGESTION: Supplied congestion control algorithm not supported on this host",
                None,
            ),
        ] {
            assert_eq!(classify_iperf_error(error), expected, "{error}");
        }
    }

    #[test]
    fn retries_back_off_to_a_cap_within_a_budget() {
        assert_eq!(retry_wait(1), Duration::from_secs(1));
        assert_eq!(retry_wait(2), Duration::from_secs(2));
        assert_eq!(retry_wait(4), Duration::from_secs(8));
        assert_eq!(retry_wait(5), RETRY_WAIT_MAX);
        assert_eq!(retry_wait(100), RETRY_WAIT_MAX);
        assert!(retry_budget(1) >= Duration::from_secs(120));
        assert!(retry_budget(60) > Duration::from_secs(4 * 60));
    }
}
