//! The thermal sidecar: while a stress tool runs, it reads hwmon every
//! second (through `vetting_probes::parsers::hwmon`), sends every plausible
//! reading as a sensor sample, and keeps each sensor's peak. When stopped
//! its [`SidecarSummary`] is judged by `vetting_probes::verdicts::cpu`
//! (the sensor rules of `sensors -j`/hwmon, trusted sources only, plus the
//! stress limit for CPU temperatures) and uploaded for the orchestrator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use vetting_probes::parsers::hwmon;
use vetting_probes::parsers::sensors::{SensorKind, SensorReading};

use crate::outbox::SensorSink;

pub use vetting_probes::verdicts::cpu::SidecarSummary;

/// A running sidecar; [`Sidecar::stop`] ends it and returns the summary.
#[derive(Debug)]
pub struct Sidecar {
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: Option<JoinHandle<SidecarSummary>>,
}

impl Sidecar {
    /// Starts reading `hwmon_root` every `interval`, sending samples to
    /// `sensors`.
    pub fn start(hwmon_root: PathBuf, interval: Duration, sensors: SensorSink) -> Sidecar {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel::<()>();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut summary = SidecarSummary::default();
                let mut peaks: BTreeMap<String, SensorReading> = BTreeMap::new();
                loop {
                    read_once(&hwmon_root, &sensors, &mut summary, &mut peaks);
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // Woken by stop (or the interval passed): read once
                    // more, then the flag ends the loop.
                    let _ = woken.recv_timeout(interval);
                }
                summary.peaks = peaks.into_values().collect();
                summary
            })
        };
        Sidecar {
            stop,
            wake,
            thread: Some(thread),
        }
    }

    /// Stops the sidecar (after one last reading) and returns what it saw.
    pub fn stop(mut self) -> SidecarSummary {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
    }
}

/// The unit of a sample for a reading.
fn unit_of(reading: &SensorReading) -> String {
    if reading.unit.is_empty() {
        match reading.kind {
            SensorKind::Temperature => "°C".to_string(),
            SensorKind::Fan => "RPM".to_string(),
            SensorKind::Voltage => "V".to_string(),
            SensorKind::Current => "A".to_string(),
            SensorKind::Power => "W".to_string(),
            _ => String::new(),
        }
    } else {
        reading.unit.clone()
    }
}

fn read_once(
    root: &std::path::Path,
    sensors: &SensorSink,
    summary: &mut SidecarSummary,
    peaks: &mut BTreeMap<String, SensorReading>,
) {
    let Ok(readings) = hwmon::read_hwmon(root) else {
        return;
    };
    summary.rounds += 1;
    for reading in readings {
        if !matches!(
            reading.kind,
            SensorKind::Temperature | SensorKind::Fan | SensorKind::Power
        ) {
            continue;
        }
        let Some(value) = reading.input.filter(|value| value.is_finite()) else {
            continue;
        };
        let name = format!("{}/{}", reading.driver, reading.label);
        if sensors.record_blocking(&name, value, &unit_of(&reading)) {
            summary.samples += 1;
        }
        let key = format!("{}/{}", reading.chip, reading.label);
        let higher = peaks
            .get(&key)
            .and_then(|peak| peak.input)
            .is_none_or(|peak| value > peak);
        if higher {
            peaks.insert(key, reading);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use vetting_probes::{Status, Thresholds};

    fn write(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// A fake hwmon tree with one coretemp chip.
    fn hwmon_tree(temp_millidegrees: u32) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let chip = root.path().join("hwmon0");
        std::fs::create_dir(&chip).unwrap();
        write(&chip.join("name"), "coretemp\n");
        write(&chip.join("temp1_label"), "Package id 0\n");
        write(&chip.join("temp1_input"), &format!("{temp_millidegrees}\n"));
        write(&chip.join("temp1_max"), "100000\n");
        write(&chip.join("temp1_crit"), "100000\n");
        root
    }

    #[test]
    fn samples_are_sent_and_peaks_judged_against_the_stress_limit() {
        let root = hwmon_tree(45_000);
        let outbox = Outbox::new(0, 1000);
        let sidecar = Sidecar::start(
            root.path().to_path_buf(),
            Duration::from_millis(10),
            SensorSink::new(outbox.clone(), None),
        );
        // wait for a few rounds, then raise the temperature
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while outbox.len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        write(&root.path().join("hwmon0/temp1_input"), "97000\n");
        let summary = sidecar.stop();
        assert!(summary.samples >= 3);
        let samples = outbox.peek_batch(10_000, usize::MAX);
        assert!(
            samples
                .iter()
                .all(|s| s.name == "coretemp/Package id 0" && s.unit == "°C")
        );
        assert_eq!(samples.last().unwrap().value, 97.0);
        let verdict = summary.verdict(&Thresholds::default());
        assert_eq!(verdict.status, Status::Fail, "{verdict:?}");
        assert!(verdict.messages(Status::Fail).any(|m| m.contains("97.0")));
    }

    #[test]
    fn no_hwmon_is_a_skip() {
        let root = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start(
            root.path().join("absent"),
            Duration::from_millis(10),
            SensorSink::new(Outbox::new(0, 10), None),
        );
        let summary = sidecar.stop();
        assert_eq!(summary.verdict(&Thresholds::default()).status, Status::Skip);
    }
}
