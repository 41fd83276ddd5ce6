//! The orchestrator's verdict counts for the agent's own rules too: an
//! agent holding a valid token reports CPUStress, Storage or Network as
//! passed, but the evidence it uploaded (the thermal sidecar's peaks, the
//! EDAC and throttle counters, the NIC counters, the SMART outputs before
//! and after) fails the rules of `vetting_probes::verdicts`, re-applied by
//! the orchestrator with its own thresholds: the stage fails. The same
//! documents with nothing grown pass, and a document that cannot be read
//! fails the stage without its content being echoed.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{Harness, booting_run, harness_with, hello};

/// The stages a run passes through before `stage`, each reported passed.
const BEFORE_NETWORK: [&str; 4] = ["InventoryCheck", "SMART", "CPUStress", "Storage"];

fn passed(stage: &str) -> Value {
    let mut result = json!({
        "stage": stage, "attempt": 1, "outcome": "passed",
        "verdict": {"status": "pass", "reasons": []}
    });
    if stage == "InventoryCheck" {
        result["inventory"] = serde_json::to_value(vetting_probes::inventory::Inventory::empty(
            chrono::Utc::now(),
        ))
        .unwrap();
    }
    result
}

impl Harness {
    /// A claimed run driven to `stage` by passing results, and its token.
    async fn run_at(&self, index: u32, stage: &str) -> (String, String) {
        let (run, token) = booting_run(self, index).await;
        for (endpoint, body) in [
            ("hello", hello()),
            (
                "claim",
                json!({"protocol_version": 1, "agent_version": "t"}),
            ),
        ] {
            let (status, answer) = self.post(&run, endpoint, Some(&token), body).await;
            assert_eq!(status, 200, "{endpoint}: {answer}");
        }
        for earlier in BEFORE_NETWORK
            .iter()
            .take_while(|earlier| **earlier != stage)
        {
            let (status, answer) = self
                .post(&run, "result", Some(&token), passed(earlier))
                .await;
            assert_eq!(status, 200, "{earlier}: {answer}");
        }
        (run, token)
    }

    /// A run driven to `stage` (host `index`) whose agent uploads
    /// `document` as `tool` evidence of that stage, through the real
    /// endpoint and token, and reports the stage passed naming it: the run
    /// and the orchestrator's answer.
    async fn passed_with_evidence(
        &self,
        index: u32,
        (stage, name, tool): (&str, &str, &str),
        document: Vec<u8>,
    ) -> (String, Value) {
        let (run, token) = self.run_at(index, stage).await;
        let response = self
            .client
            .post(format!("{}/api/v1/runs/{run}/artifact", self.url))
            .query(&[
                ("name", name),
                ("tool", tool),
                ("stage", stage),
                ("attempt", "1"),
            ])
            .bearer_auth(&token)
            .body(document)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, 200, "{name}: {}", response.text().await.unwrap());
        let mut result = passed(stage);
        result["artifacts"] = json!([{"name": name, "tool": tool}]);
        let (status, answer) = self.post(&run, "result", Some(&token), result).await;
        assert_eq!(status, 200, "{answer}");
        (run, answer)
    }

    async fn outcome_of(&self, run: &str, stage: &str) -> String {
        let stages = self.orchestrator.operator().stages(run).await.unwrap();
        stages
            .iter()
            .find(|record| record.stage == stage)
            .map(|record| record.outcome.clone())
            .unwrap_or_default()
    }
}

fn fixture(relative: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One case: the evidence of an agent's rule, with nothing grown and
/// with the failure the orchestrator must find.
struct Case {
    stage: &'static str,
    name: &'static str,
    tool: &'static str,
    good: Value,
    bad: Value,
    /// A part of the orchestrator's failing reason.
    reason: &'static str,
}

fn coretemp_peak(celsius: f64) -> Value {
    json!({"rounds": 60, "samples": 120, "peaks": [{
        "chip": "coretemp-hwmon1", "driver": "coretemp", "label": "Package id 0",
        "input_name": "temp1", "kind": "temperature", "input": celsius,
        "min": null, "max": 100.0, "crit": 105.0, "alarms": [], "unit": "°C"
    }]})
}

fn interface(rx_errors: u64) -> Value {
    json!({"rx_errors": rx_errors, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0})
}

fn cases() -> Vec<Case> {
    let smart: Value =
        serde_json::from_slice(&fixture("smartctl/scrutiny-smart-ata-full.json")).unwrap();
    let mut reallocated = smart.clone();
    for row in reallocated["ata_smart_attributes"]["table"]
        .as_array_mut()
        .unwrap()
    {
        if row["id"] == 5 {
            row["raw"]["value"] = json!(2);
            row["raw"]["string"] = json!("2");
        }
    }
    vec![
        // 97 °C: under the sensor's own max (100), over the stress limit (95)
        Case {
            stage: "CPUStress",
            name: "thermal-sidecar.json",
            tool: "thermal-sidecar",
            good: coretemp_peak(61.0),
            bad: coretemp_peak(97.0),
            reason: "peaked at 97.0 °C under stress >= limit 95.0 °C",
        },
        Case {
            stage: "CPUStress",
            name: "edac.json",
            tool: "edac",
            good: json!({"before": {"mc0": {"corrected": 1, "uncorrected": 0}},
                         "after": {"mc0": {"corrected": 1, "uncorrected": 0}}}),
            bad: json!({"before": {"mc0": {"corrected": 1, "uncorrected": 0}},
                        "after": {"mc0": {"corrected": 4, "uncorrected": 0}}}),
            reason: "EDAC mc0: 3 new corrected memory error(s)",
        },
        Case {
            stage: "CPUStress",
            name: "cpu-throttle.json",
            tool: "cpu-throttle",
            good: json!({"before": {"cpu0": 4, "cpu1": 0}, "after": {"cpu0": 4, "cpu1": 0}}),
            bad: json!({"before": {"cpu0": 4, "cpu1": 0}, "after": {"cpu0": 4, "cpu1": 7}}),
            reason: "thermal throttling during stress: cpu1 +7",
        },
        Case {
            stage: "Network",
            name: "net-counters-eth0.json",
            tool: "net-counters",
            good: json!({"subject": "eth0", "before": interface(5), "after": interface(5)}),
            bad: json!({"subject": "eth0", "before": interface(5), "after": interface(9)}),
            reason: "eth0: 4 new rx/tx error(s) during the test",
        },
        // the drive's own thresholds pass 2 reallocated sectors (warn);
        // growth during the surface test fails
        Case {
            stage: "Storage",
            name: "smart-growth-sda.json",
            tool: "smart-growth",
            good: json!({"subject": "sda", "before": smart.clone(), "after": smart.clone()}),
            bad: json!({"subject": "sda", "before": smart, "after": reallocated}),
            reason: "SMART attribute 5 Reallocated_Sector_Ct grew during the surface test: 0 → 2",
        },
    ]
}

#[tokio::test]
async fn evidence_the_agent_called_passed_is_failed_by_the_orchestrator() {
    let harness = harness_with(|config| config.dispatcher.max_in_flight = 64).await;
    for (number, case) in cases().into_iter().enumerate() {
        let evidence = (case.stage, case.name, case.tool);
        // nothing grew: the stage passes and the run moves on; the agent
        // says passed but its evidence fails the orchestrator's rule: the
        // stage fails
        let mut answers = Vec::new();
        for (offset, document, outcome) in [(0, &case.good, "passed"), (1, &case.bad, "failed")] {
            let document = serde_json::to_vec(document).unwrap();
            let (run, answer) = harness
                .passed_with_evidence(20 + 2 * number as u32 + offset, evidence, document)
                .await;
            assert_eq!(
                harness.outcome_of(&run, case.stage).await,
                outcome,
                "{}: {answer}",
                case.tool
            );
            answers.push(answer);
        }
        assert_eq!(answers[0]["verdict"]["status"], "pass", "{}", answers[0]);
        assert_ne!(answers[0]["position"]["state"], "FailedHolding");
        let answer = &answers[1];
        assert_eq!(
            answer["verdict"]["status"], "fail",
            "{}: {answer}",
            case.tool
        );
        let text = answer.to_string();
        assert!(
            text.contains(&format!("{} `{}`: ", case.tool, case.name))
                && text.contains(case.reason),
            "{}: {text}",
            case.tool
        );
        assert!(text.contains("the agent reported Passed"), "{text}");
        assert_eq!(answer["position"]["state"], "FailedHolding", "{answer}");
    }
}

#[tokio::test]
async fn evidence_of_the_agents_rules_that_cannot_be_read_fails_the_stage() {
    let harness = harness_with(|config| config.dispatcher.max_in_flight = 64).await;
    for (index, (stage, name, tool, document)) in [
        // a controller name sysfs never gives, carrying a secret
        (
            "CPUStress",
            "edac.json",
            "edac",
            r#"{"before": {}, "after": {"TOPSECRET/../mc0": {"corrected": 0, "uncorrected": 0}}}"#,
        ),
        // a field the document does not have (a verdict of its own)
        (
            "CPUStress",
            "cpu-throttle.json",
            "cpu-throttle",
            r#"{"before": {}, "after": {}, "verdict": "pass TOPSECRET"}"#,
        ),
        // counters of no interface
        (
            "Network",
            "net-counters.json",
            "net-counters",
            r#"{"before": {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0},
                "after": {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}}"#,
        ),
        // no smartctl outputs inside
        (
            "Storage",
            "smart-growth-sda.json",
            "smart-growth",
            r#"{"subject": "sda", "before": {"TOPSECRET": 1}, "after": {}}"#,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (run, answer) = harness
            .passed_with_evidence(
                40 + index as u32,
                (stage, name, tool),
                document.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(answer["verdict"]["status"], "fail", "{tool}: {answer}");
        let text = answer.to_string();
        assert!(
            text.contains(&format!("{tool} output `{name}` cannot be re-judged")),
            "{text}"
        );
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert_eq!(harness.outcome_of(&run, stage).await, "failed", "{tool}");
    }
}
