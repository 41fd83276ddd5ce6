//! Network's own rule: the error and drop counters of the interface that
//! reaches the orchestrator, read from sysfs before and after the iperf3
//! measurements. Errors that grew fail; drops that grew warn.
//!
//! Evidence: `net-counters`, a [`BeforeAfter`] document of
//! [`InterfaceCounters`] whose subject is the interface.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BeforeAfter, check_names, document};
use crate::{ParseError, Status, Thresholds, Tool, ToolReport, Verdict};

/// Error and drop counters of an interface
/// (`/sys/class/net/IF/statistics/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceCounters {
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// Reads the counters of `interface` under `net_root`
/// (`/sys/class/net`); a counter that cannot be read counts 0.
pub fn read_counters(net_root: &Path, interface: &str) -> InterfaceCounters {
    let statistics = net_root.join(interface).join("statistics");
    let read = |file: &str| {
        std::fs::read_to_string(statistics.join(file))
            .ok()
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    InterfaceCounters {
        rx_errors: read("rx_errors"),
        tx_errors: read("tx_errors"),
        rx_dropped: read("rx_dropped"),
        tx_dropped: read("tx_dropped"),
    }
}

/// Errors that grew fail; drops that grew warn.
pub fn judge_counters(
    verdict: &mut Verdict,
    interface: &str,
    before: &InterfaceCounters,
    after: &InterfaceCounters,
) {
    let errors = after
        .rx_errors
        .saturating_sub(before.rx_errors)
        .saturating_add(after.tx_errors.saturating_sub(before.tx_errors));
    let drops = after
        .rx_dropped
        .saturating_sub(before.rx_dropped)
        .saturating_add(after.tx_dropped.saturating_sub(before.tx_dropped));
    if errors > 0 {
        verdict.fail_with(format!(
            "{interface}: {errors} new rx/tx error(s) during the test"
        ));
    }
    if drops > 0 {
        verdict.warn(format!(
            "{interface}: {drops} new dropped packet(s) during the test"
        ));
    }
    if errors == 0 && drops == 0 {
        verdict.add(
            Status::Pass,
            format!("{interface}: no new errors or drops during the test"),
        );
    }
}

/// Whether `name` can be a Linux interface name: 1 to 15 bytes, printable
/// ASCII without `/`, not `.` or `..` (`dev_valid_name`).
pub fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Judges a `net-counters` document.
pub fn counters_report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let counters: BeforeAfter<InterfaceCounters> = document(Tool::NetCounters, input)?;
    let Some(interface) = &counters.subject else {
        return Err(ParseError::format(
            Tool::NetCounters.name(),
            "the document names no interface",
        ));
    };
    check_names(
        Tool::NetCounters,
        "network interface",
        [interface],
        valid_interface_name,
    )?;
    let mut verdict = Verdict::pass();
    judge_counters(&mut verdict, interface, &counters.before, &counters.after);
    ToolReport::new(Tool::NetCounters, &counters, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grown_errors_fail_and_drops_warn() {
        let before = InterfaceCounters::default();
        let mut verdict = Verdict::pass();
        for (after, status) in [
            (before, Status::Pass),
            (
                InterfaceCounters {
                    rx_dropped: 3,
                    ..before
                },
                Status::Warn,
            ),
            (
                InterfaceCounters {
                    tx_errors: 1,
                    ..before
                },
                Status::Fail,
            ),
        ] {
            judge_counters(&mut verdict, "eth0", &before, &after);
            assert_eq!(verdict.status, status, "{after:?}");
        }
    }

    #[test]
    fn loopback_counters_are_read() {
        // the real sysfs of this machine: lo always has statistics
        let counters = read_counters(Path::new("/sys/class/net"), "lo");
        let again = read_counters(Path::new("/sys/class/net"), "lo");
        assert!(again.rx_errors >= counters.rx_errors);
    }

    #[test]
    fn documents_name_a_real_interface() {
        let document = |interface: &str, tx_errors: u64| {
            BeforeAfter::new(
                Some(interface),
                InterfaceCounters::default(),
                InterfaceCounters {
                    tx_errors,
                    ..InterfaceCounters::default()
                },
            )
            .to_json()
            .unwrap()
        };
        let report = counters_report(&document("eth0", 0), &Thresholds::default()).unwrap();
        assert_eq!(report.verdict.status, Status::Pass);
        let report = counters_report(&document("eth0", 4), &Thresholds::default()).unwrap();
        assert_eq!(report.verdict.status, Status::Fail);
        for hostile in ["", "..", "a/b", "a name", "sixteen-letters!", "eth0\n"] {
            assert!(
                counters_report(&document(hostile, 0), &Thresholds::default()).is_err(),
                "{hostile:?}"
            );
        }
        assert!(
            counters_report(
                br#"{"before": {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0},
                     "after": {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}}"#,
                &Thresholds::default()
            )
            .is_err(),
            "no interface"
        );
    }
}
