//! Parser and verdict rules for `iperf3 -J` output.
//!
//! TCP runs summarise in `end.sum_sent` / `end.sum_received`; UDP runs in
//! `end.sum` (newer iperf3 also writes `sum_received` for UDP, which is then
//! preferred). A run that failed has an `error` key, sometimes beside a
//! partial report.
//!
//! Verdict: an `error` fails with its text; with a known link speed,
//! throughput under `NetworkThresholds::min_share_of_link` of it fails.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "iperf3";

/// The summary of one iperf3 run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Iperf3 {
    pub version: Option<String>,
    /// `TCP` or `UDP`.
    pub protocol: Option<String>,
    pub num_streams: Option<u64>,
    /// The server sent (`-R`).
    pub reverse: bool,
    pub duration_seconds: Option<f64>,
    pub remote_host: Option<String>,
    /// The throughput that counts: received (TCP), or the UDP sum.
    pub throughput_bps: Option<f64>,
    pub sent_bps: Option<f64>,
    pub received_bps: Option<f64>,
    pub sent_bytes: Option<u64>,
    pub received_bytes: Option<u64>,
    /// TCP retransmits (sender side).
    pub retransmits: Option<u64>,
    /// UDP only.
    pub jitter_ms: Option<f64>,
    pub lost_packets: Option<u64>,
    pub packets: Option<u64>,
    pub lost_percent: Option<f64>,
    pub intervals: usize,
    /// iperf3's own error message, when the run failed.
    pub error: Option<String>,
}

impl Iperf3 {
    /// Throughput in Mbit/s.
    pub fn throughput_mbps(&self) -> Option<f64> {
        self.throughput_bps.map(|bps| bps / 1e6)
    }
}

/// Parses `iperf3 -J` output.
pub fn parse(input: &[u8]) -> Result<Iperf3, ParseError> {
    let document: Value = crate::error::json(TOOL, input)?;
    if !document.is_object() {
        return Err(ParseError::format(TOOL, "expected a JSON object"));
    }
    let error = document.get("error").map(|error| match error {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    });
    let start = document.get("start");
    let end = document.get("end");
    let test_start = start.and_then(|start| start.get("test_start"));
    let sum_sent = end
        .and_then(|end| end.get("sum_sent"))
        .filter(|sum| sum.is_object());
    let sum_received = end
        .and_then(|end| end.get("sum_received"))
        .filter(|sum| sum.is_object());
    let sum_udp = end
        .and_then(|end| end.get("sum"))
        .filter(|sum| sum.is_object());
    if error.is_none() && sum_sent.is_none() && sum_received.is_none() && sum_udp.is_none() {
        return Err(ParseError::format(
            TOOL,
            "no `end` summary (sum_sent, sum_received or sum) and no `error`",
        ));
    }
    let protocol = test_start
        .and_then(|test| test.get("protocol"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let received_bps = sum_received.and_then(|sum| float(sum, "bits_per_second"));
    let udp_bps = sum_udp.and_then(|sum| float(sum, "bits_per_second"));
    let udp_summary = sum_received.or(sum_udp);
    Ok(Iperf3 {
        version: start
            .and_then(|start| start.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string),
        num_streams: test_start.and_then(|test| integer(test, "num_streams")),
        reverse: test_start
            .and_then(|test| integer(test, "reverse"))
            .is_some_and(|reverse| reverse != 0),
        duration_seconds: test_start.and_then(|test| float(test, "duration")),
        remote_host: start
            .and_then(|start| start.get("connecting_to"))
            .and_then(|connecting| connecting.get("host"))
            .and_then(Value::as_str)
            .map(str::to_string),
        throughput_bps: received_bps.or(udp_bps),
        sent_bps: sum_sent.and_then(|sum| float(sum, "bits_per_second")),
        received_bps,
        sent_bytes: sum_sent.and_then(|sum| integer(sum, "bytes")),
        received_bytes: sum_received.and_then(|sum| integer(sum, "bytes")),
        retransmits: sum_sent.and_then(|sum| integer(sum, "retransmits")),
        jitter_ms: udp_summary.and_then(|sum| float(sum, "jitter_ms")),
        lost_packets: udp_summary.and_then(|sum| integer(sum, "lost_packets")),
        packets: udp_summary.and_then(|sum| integer(sum, "packets")),
        lost_percent: udp_summary.and_then(|sum| float(sum, "lost_percent")),
        intervals: document
            .get("intervals")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        protocol,
        error,
    })
}

/// Judges a run without a known link speed: only an `error` (or no
/// throughput at all) fails.
pub fn verdict(data: &Iperf3, thresholds: &Thresholds) -> Verdict {
    verdict_with_link(data, None, thresholds)
}

/// Judges a run against the link speed (the lower of the two ends, in
/// Mbit/s): throughput under `min_share_of_link` of it fails.
pub fn verdict_with_link(
    data: &Iperf3,
    link_mbps: Option<u64>,
    thresholds: &Thresholds,
) -> Verdict {
    let mut verdict = Verdict::pass();
    if let Some(error) = &data.error {
        verdict.fail_with(format!("iperf3 error: {error}"));
        return verdict;
    }
    let Some(throughput) = data.throughput_mbps() else {
        verdict.fail_with("iperf3 reported no throughput");
        return verdict;
    };
    if let Some(link) = link_mbps.filter(|&link| link > 0) {
        let share = thresholds.network.min_share_of_link;
        let required = link as f64 * share;
        if throughput < required {
            verdict.fail_with(format!(
                "iperf3 throughput {throughput:.1} Mbit/s < {:.0}% of link {link} Mbit/s ({required:.1} Mbit/s)",
                share * 100.0
            ));
        }
    }
    verdict
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let data = parse(input)?;
    let verdict = verdict(&data, thresholds);
    ToolReport::new(Tool::Iperf3, &data, verdict)
}

fn float(object: &Value, key: &str) -> Option<f64> {
    object.get(key)?.as_f64().filter(|value| value.is_finite())
}

fn integer(object: &Value, key: &str) -> Option<u64> {
    let value = object.get(key)?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|float| float.is_finite() && *float >= 0.0)
            .map(|float| float as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn an_error_key_fails_with_its_text() {
        let data = parse(br#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#).unwrap();
        let verdict = verdict(&data, &Thresholds::default());
        assert_eq!(verdict.status, Status::Fail);
        assert!(verdict.reasons[0].message.contains("Connection refused"));
    }

    #[test]
    fn throughput_under_the_share_of_the_link_fails() {
        let data = Iperf3 {
            throughput_bps: Some(600e6),
            ..Iperf3::default()
        };
        let thresholds = Thresholds::default();
        assert_eq!(
            verdict_with_link(&data, Some(1000), &thresholds).status,
            Status::Fail
        );
        assert_eq!(
            verdict_with_link(&data, Some(800), &thresholds).status,
            Status::Pass
        );
        assert_eq!(
            verdict_with_link(&data, None, &thresholds).status,
            Status::Pass
        );
    }
}
