//! Power drivers against real receivers, inside network namespaces these
//! tests create: Wake-on-LAN to a UDP listener (checked byte for byte),
//! IPMI through the real `ipmitool -I lanplus` against OpenIPMI's `ipmi_sim`,
//! Redfish against sushy-tools' emulator (fake driver, from PyPI; the venv
//! comes from `scripts/power-sushy-venv.sh`).

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vetting_core::power::{
    self, CollectedPowerLog, EncryptedSecret, IpmiSettings, PowerError, PowerOutcome,
    PowerSettings, RedfishAuth, RedfishSettings, SecureOnPassword, WolSettings,
    power_on_for_pxe_logged,
};
use vetting_core::pxe::MacAddress;

use crate::netns::{Namespace, block_on_in_netns, in_netns, netns_available, run, wait_until};

const SECRET_KEY: [u8; 32] = [0x5a; 32];

fn encrypted(password: &str) -> EncryptedSecret {
    EncryptedSecret::encrypt(password, &SECRET_KEY).unwrap()
}

#[test]
fn wake_on_lan_packets_arrive_byte_for_byte() {
    if !netns_available() {
        return;
    }
    // Two namespaces joined by a veth pair: the orchestrator sends, the
    // host's side listens on the discard port.
    let orchestrator = Namespace::new("wol-orch");
    let host = Namespace::new("wol-host");
    run(
        "ip",
        &[
            "link",
            "add",
            "lan0",
            "netns",
            &orchestrator.name,
            "type",
            "veth",
            "peer",
            "name",
            "lan0",
            "netns",
            &host.name,
        ],
    );
    orchestrator.ip(&["addr", "add", "10.67.0.1/24", "dev", "lan0"]);
    orchestrator.ip(&["link", "set", "lan0", "up"]);
    host.ip(&["addr", "add", "10.67.0.2/24", "dev", "lan0"]);
    host.ip(&["link", "set", "lan0", "up"]);
    let listener = in_netns(&host.name, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9)).unwrap()
    });
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let target: MacAddress = "52:54:00:aa:bb:cc".parse().unwrap();
    let mut expected = vec![0xffu8; 6];
    for _ in 0..16 {
        expected.extend_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
    }
    let password = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab];
    let mut expected_with_password = expected.clone();
    expected_with_password.extend_from_slice(&password);

    // A directed broadcast to the LAN, with a SecureOn password, through
    // the factory as the dispatcher calls it.
    let mut directed = WolSettings::new(target);
    directed.broadcast = Ipv4Addr::new(10, 67, 0, 255);
    directed.repeat = 3;
    directed.interval_ms = 10;
    directed.secure_on = Some(SecureOnPassword::new(password));
    // The limited broadcast, pinned to the LAN interface.
    let mut pinned = WolSettings::new(target);
    pinned.repeat = 2;
    pinned.interval_ms = 10;
    pinned.interface = Some("lan0".to_owned());

    let (directed_outcome, pinned_outcome, log_text) =
        block_on_in_netns(&orchestrator.name, move || async move {
            let log = CollectedPowerLog::new();
            let directed_driver =
                power::driver(&PowerSettings::Wol(directed), &SECRET_KEY).unwrap();
            let directed_outcome = power_on_for_pxe_logged(directed_driver.as_ref(), &log)
                .await
                .unwrap();
            let pinned_driver = power::driver(&PowerSettings::Wol(pinned), &SECRET_KEY).unwrap();
            let pinned_outcome = power_on_for_pxe_logged(pinned_driver.as_ref(), &log)
                .await
                .unwrap();
            (directed_outcome, pinned_outcome, log.text())
        });
    assert_eq!(
        directed_outcome,
        PowerOutcome::WakeOnLanSent {
            packets: 3,
            destination: "10.67.0.255:9".parse().unwrap()
        }
    );
    assert_eq!(
        pinned_outcome,
        PowerOutcome::WakeOnLanSent {
            packets: 2,
            destination: "255.255.255.255:9".parse().unwrap()
        }
    );
    assert!(
        log_text.contains("sent 3 magic packet(s) for 52:54:00:aa:bb:cc to 10.67.0.255:9"),
        "{log_text}"
    );

    let mut buffer = [0u8; 512];
    for index in 0..5 {
        let (length, source) = listener.recv_from(&mut buffer).unwrap();
        assert_eq!(
            source.ip(),
            std::net::IpAddr::V4(Ipv4Addr::new(10, 67, 0, 1))
        );
        let wanted = if index < 3 {
            &expected_with_password
        } else {
            &expected
        };
        assert_eq!(&buffer[..length], wanted.as_slice(), "packet {index}");
    }
}

/// ipmi_sim with one BMC on 127.0.0.1:623 inside the namespace; its
/// chassis control script records every `set` in `actions` and keeps the
/// power state in `power`.
struct IpmiSimulator {
    folder: tempfile::TempDir,
}

impl IpmiSimulator {
    fn prepare() -> Self {
        let folder = tempfile::tempdir().unwrap();
        let dir = folder.path().display().to_string();
        let chassis = folder.path().join("chassis.sh");
        std::fs::write(
            &chassis,
            format!(
                r#"#!/bin/sh
# chassis_control for ipmi_sim: "get NAME..." prints NAME:VALUE lines,
# "set NAME VALUE..." records and applies.
operation=$1; shift
case "$operation" in
  get)
    for name in "$@"; do
      case "$name" in
        power) echo "power:$(cat {dir}/power 2>/dev/null || echo 0)" ;;
        boot) echo "boot:$(cat {dir}/boot 2>/dev/null || echo default)" ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      echo "set $1 $2" >> {dir}/actions
      case "$1" in
        power) echo "$2" > {dir}/power ;;
        boot) echo "$2" > {dir}/boot ;;
      esac
      shift 2
    done ;;
esac
"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &chassis,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(
            folder.path().join("lan.conf"),
            format!(
                r#"name "vetting-test-bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{}"
  user 1 true  ""      "test"      user  10 none md2 md5 straight
  user 2 true  "admin" "bmc-pass-1" admin 10 none md2 md5 straight
"#,
                chassis.display()
            ),
        )
        .unwrap();
        std::fs::write(
            folder.path().join("sim.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )
        .unwrap();
        std::fs::create_dir(folder.path().join("state")).unwrap();
        Self { folder }
    }

    fn spawn(&self) -> tokio::process::Child {
        let path = self.folder.path();
        tokio::process::Command::new("ipmi_sim")
            .arg("-c")
            .arg(path.join("lan.conf"))
            .arg("-f")
            .arg(path.join("sim.emu"))
            .arg("-s")
            .arg(path.join("state"))
            .args(["-n", "-p"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ipmi_sim (package openipmi)")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.folder.path().join(name)).unwrap_or_default()
    }
}

async fn udp_port_is_listening(port: u16) -> bool {
    let output = tokio::process::Command::new("ss")
        .args(["-Hlun"])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&output.stdout).contains(&format!("127.0.0.1:{port} "))
}

#[test]
fn ipmi_sets_pxe_boot_then_powers_on_or_cycles_in_the_simulator() {
    if !netns_available() {
        return;
    }
    let namespace = Namespace::new("ipmi");
    let simulator = IpmiSimulator::prepare();
    block_on_in_netns(&namespace.name.clone(), move || async move {
        let _bmc = simulator.spawn();
        wait_until("ipmi_sim to listen", Duration::from_secs(10), || {
            udp_port_is_listening(623)
        })
        .await;
        let mut settings = IpmiSettings::new("127.0.0.1", "admin", encrypted("bmc-pass-1"));
        settings.uefi = true;
        // ipmi_sim cannot list its cipher suites; asking costs 10 s.
        settings.cipher_suite = Some(3);
        settings.command_timeout_seconds = 30;
        let driver = power::driver(&PowerSettings::Ipmi(settings.clone()), &SECRET_KEY).unwrap();

        // Off: boot device first, then power on.
        let log = CollectedPowerLog::new();
        let outcome = power_on_for_pxe_logged(driver.as_ref(), &log)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            PowerOutcome::PoweredOn {
                action: "power on".to_owned()
            }
        );
        assert_eq!(simulator.read("actions"), "set boot pxe\nset power 1\n");
        let log_text = log.text();
        assert!(log_text.contains("-I lanplus -H 127.0.0.1 -p 623 -U admin -E -C 3 chassis bootdev pxe options=efiboot"), "{log_text}");
        assert!(
            log_text.contains("chassis power is off")
                && log_text.contains("chassis power is now on"),
            "{log_text}"
        );
        assert!(
            !log_text.contains("bmc-pass-1"),
            "the password leaked into the log"
        );

        // On: boot device, then a power cycle (off, and on again a second later).
        let outcome = power_on_for_pxe_logged(driver.as_ref(), &CollectedPowerLog::new())
            .await
            .unwrap();
        assert_eq!(
            outcome,
            PowerOutcome::Restarted {
                action: "power cycle".to_owned()
            }
        );
        wait_until(
            "the simulator to power on again",
            Duration::from_secs(10),
            || async {
                simulator
                    .read("actions")
                    .ends_with("set boot pxe\nset power 0\nset power 1\n")
            },
        )
        .await;
        assert_eq!(simulator.read("power").trim(), "1");

        // A wrong password fails with ipmitool's own message.
        let mut wrong = settings.clone();
        wrong.password = encrypted("not-the-password");
        let log = CollectedPowerLog::new();
        let error = power_on_for_pxe_logged(
            power::driver(&PowerSettings::Ipmi(wrong), &SECRET_KEY)
                .unwrap()
                .as_ref(),
            &log,
        )
        .await
        .unwrap_err();
        let PowerError::ToolFailed { stderr, .. } = &error else {
            panic!("wrong error: {error}")
        };
        assert!(stderr.contains("RMCP+"), "{stderr}");
        assert!(log.text().contains("failed"), "{}", log.text());
        // Nothing more reached the chassis.
        assert!(
            simulator
                .read("actions")
                .ends_with("set power 0\nset power 1\n")
        );
    });
}

const SYSTEM_A: &str = "1bd0e53c-0000-4c8f-9a8b-00000000000a";
const SYSTEM_B: &str = "1bd0e53c-0000-4c8f-9a8b-00000000000b";
const REDFISH_PORT: u16 = 8000;

fn sushy_venv() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = workspace.join("target/sushy-venv");
    if !venv.join("bin/sushy-emulator").exists() {
        run(
            "bash",
            &[
                workspace
                    .join("scripts/power-sushy-venv.sh")
                    .to_str()
                    .unwrap(),
                venv.to_str().unwrap(),
            ],
        );
    }
    venv
}

/// The emulator's config: two fake systems, both off, basic auth, HTTPS
/// with a self-signed certificate (as BMCs ship).
fn write_sushy_config(folder: &Path) -> PathBuf {
    let certificate = folder.join("bmc.crt");
    let key = folder.join("bmc.key");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bmc.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            certificate.to_str().unwrap(),
        ],
    );
    let htpasswd = folder.join("htpasswd");
    let hash = bcrypt::hash("redfish-pass", 4).unwrap();
    std::fs::write(&htpasswd, format!("operator:{hash}\n")).unwrap();
    let config = folder.join("emulator.conf");
    std::fs::write(
        &config,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {REDFISH_PORT}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{htpasswd}'\n\
             SUSHY_EMULATOR_SSL_CERT = '{certificate}'\n\
             SUSHY_EMULATOR_SSL_KEY = '{key}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [\n\
               {{'uuid': '{SYSTEM_A}', 'name': 'node-a', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:66:00:0a', 'ip': '10.66.0.10'}}]}},\n\
               {{'uuid': '{SYSTEM_B}', 'name': 'node-b', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:66:00:0b', 'ip': '10.66.0.11'}}]}},\n\
             ]\n",
            state = folder.join("state").display(),
            htpasswd = htpasswd.display(),
            certificate = certificate.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    config
}

async fn read_system(client: &reqwest::Client, id: &str) -> Value {
    client
        .get(format!(
            "https://127.0.0.1:{REDFISH_PORT}/redfish/v1/Systems/{id}"
        ))
        .basic_auth("operator", Some("redfish-pass"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
fn redfish_sets_the_boot_override_and_resets_in_the_emulator() {
    if !netns_available() {
        return;
    }
    let venv = sushy_venv();
    let namespace = Namespace::new("redfish");
    let folder = tempfile::tempdir().unwrap();
    let config = write_sushy_config(folder.path());
    block_on_in_netns(&namespace.name.clone(), move || async move {
        let _emulator = tokio::process::Command::new(venv.join("bin/sushy-emulator"))
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        wait_until(
            "sushy-emulator to answer",
            Duration::from_secs(30),
            || async {
                client
                    .get(format!("https://127.0.0.1:{REDFISH_PORT}/redfish/v1/"))
                    .send()
                    .await
                    .is_ok()
            },
        )
        .await;

        let mut settings = RedfishSettings::new(
            format!("https://127.0.0.1:{REDFISH_PORT}"),
            "operator",
            encrypted("redfish-pass"),
        );
        settings.auth = RedfishAuth::Basic;
        settings.system_id = Some(SYSTEM_A.to_owned());

        // The BMC's self-signed certificate is refused while verification is on.
        let error = power::driver(&PowerSettings::Redfish(settings.clone()), &SECRET_KEY)
            .unwrap()
            .power_on_for_pxe(&CollectedPowerLog::new())
            .await
            .unwrap_err();
        assert!(matches!(error, PowerError::Http { .. }), "{error}");
        settings.verify_tls = false;

        // Off: boot override to PXE, then ResetType On.
        let log = CollectedPowerLog::new();
        let driver = power::driver(&PowerSettings::Redfish(settings.clone()), &SECRET_KEY).unwrap();
        let outcome = power_on_for_pxe_logged(driver.as_ref(), &log)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            PowerOutcome::PoweredOn {
                action: "On".to_owned()
            }
        );
        let system = read_system(&client, SYSTEM_A).await;
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe");
        let log_text = log.text();
        assert!(
            log_text.contains(&format!("PATCH /redfish/v1/Systems/{SYSTEM_A}")),
            "{log_text}"
        );
        assert!(
            log_text.contains("reset On accepted") && !log_text.contains("redfish-pass"),
            "{log_text}"
        );
        // The fake BMC applies power changes after a random delay of up to 11 s.
        wait_until("system A to be on", Duration::from_secs(20), || async {
            read_system(&client, SYSTEM_A).await["PowerState"] == "On"
        })
        .await;
        // The other system was not touched.
        let other = read_system(&client, SYSTEM_B).await;
        assert_eq!(other["PowerState"], "Off");
        assert_ne!(other["Boot"]["BootSourceOverrideTarget"], "Pxe");

        // On: an allowed restart (the emulator allows ForceRestart).
        let outcome = power_on_for_pxe_logged(driver.as_ref(), &CollectedPowerLog::new())
            .await
            .unwrap();
        assert_eq!(
            outcome,
            PowerOutcome::Restarted {
                action: "ForceRestart".to_owned()
            }
        );

        // Errors come with the BMC's own message.
        let mut unknown_system = settings.clone();
        unknown_system.system_id = Some("no-such-node".to_owned());
        let log = CollectedPowerLog::new();
        let error = power_on_for_pxe_logged(
            power::driver(&PowerSettings::Redfish(unknown_system), &SECRET_KEY)
                .unwrap()
                .as_ref(),
            &log,
        )
        .await
        .unwrap_err();
        let PowerError::Bmc {
            status, message, ..
        } = &error
        else {
            panic!("wrong error: {error}")
        };
        assert_eq!(*status, 404);
        assert!(
            message.contains("Fake system no-such-node was not found"),
            "{message}"
        );
        assert!(
            log.text()
                .contains("Fake system no-such-node was not found"),
            "{}",
            log.text()
        );

        let mut wrong_password = settings.clone();
        wrong_password.password = encrypted("nope");
        let error = power::driver(&PowerSettings::Redfish(wrong_password), &SECRET_KEY)
            .unwrap()
            .power_on_for_pxe(&CollectedPowerLog::new())
            .await
            .unwrap_err();
        assert!(
            matches!(error, PowerError::Bmc { status: 401, .. }),
            "{error}"
        );

        // Without system_id the driver refuses to guess between two systems.
        let mut unnamed = settings.clone();
        unnamed.system_id = None;
        let error = power::driver(&PowerSettings::Redfish(unnamed), &SECRET_KEY)
            .unwrap()
            .power_on_for_pxe(&CollectedPowerLog::new())
            .await
            .unwrap_err();
        let PowerError::AmbiguousSystem { count, members } = &error else {
            panic!("wrong error: {error}")
        };
        assert_eq!(*count, 2);
        assert!(
            members.contains(SYSTEM_A) && members.contains(SYSTEM_B),
            "{members}"
        );

        // Session auth needs a SessionService, which this emulator lacks (it
        // wants basic auth on every path): a clear refusal at the session
        // request, not a silent fallback to basic auth.
        let mut session = settings.clone();
        session.auth = RedfishAuth::Session;
        let error = power::driver(&PowerSettings::Redfish(session), &SECRET_KEY)
            .unwrap()
            .power_on_for_pxe(&CollectedPowerLog::new())
            .await
            .unwrap_err();
        let PowerError::Bmc {
            request, status, ..
        } = &error
        else {
            panic!("wrong error: {error}")
        };
        assert_eq!(
            (request.as_str(), *status),
            ("POST /redfish/v1/SessionService/Sessions", 401)
        );

        // The dispatcher drives it: each host's stored settings pick the
        // driver, the action and its outcome go to the run's log, a BMC
        // that refuses fails the run with the BMC's own message.
        dispatcher_powers_hosts_through_their_stored_settings(settings).await;
    });
}

async fn dispatcher_powers_hosts_through_their_stored_settings(settings: RedfishSettings) {
    use vetting_core::machine::RunState;
    use vetting_core::model::NewHost;
    use vetting_core::runs::Dispatcher;

    let db = crate::support::sqlite_db();
    let mut config = crate::support::config_for(&db);
    config.secret_key = Some(vetting_core::config::Secret(hex::encode(SECRET_KEY)));
    config.iperf.enabled = false;
    config.power.retry_secs = 0;
    let clock = vetting_core::clock::ManualClock::new(crate::support::T0);
    let orchestrator = crate::support::open(config, &clock).await;
    let dispatcher = Dispatcher::new(
        orchestrator.clone(),
        std::sync::Arc::new(vetting_core::power::StoredPowerSettings::of(&orchestrator)),
    );
    let mut unknown_system = settings.clone();
    unknown_system.system_id = Some("no-such-node".to_owned());
    let mut run_ids = Vec::new();
    for (index, power) in [
        PowerSettings::Redfish(settings),
        PowerSettings::Redfish(unknown_system),
    ]
    .into_iter()
    .enumerate()
    {
        let host = orchestrator
            .operator()
            .register_host(
                NewHost {
                    name: format!("bmc-host-{index}"),
                    macs: vec![format!("52:54:00:77:00:0{index}")],
                    power: Some(serde_json::to_value(&power).unwrap()),
                    ..Default::default()
                },
                &crate::support::operator(),
            )
            .await
            .unwrap();
        let run = orchestrator
            .operator()
            .start_run(host.id, &crate::support::operator())
            .await
            .unwrap();
        run_ids.push(run.id);
    }
    let states = || async {
        let mut states = Vec::new();
        for run_id in &run_ids {
            states.push(orchestrator.operator().get_run(run_id).await.unwrap());
        }
        states
    };
    wait_until(
        "both power actions to end",
        Duration::from_secs(60),
        || async {
            dispatcher.reconcile_once().await.unwrap();
            let runs = states().await;
            runs[0].state == RunState::Booting && runs[1].state == RunState::FailedHolding
        },
    )
    .await;
    let runs = states().await;
    let data_dir = &orchestrator.config().data_dir;
    let log = |run_id: &str| {
        vetting_core::runlogs::oplog::read(data_dir, run_id)
            .unwrap()
            .into_iter()
            .map(|line| format!("{} {}", line.level, line.text))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let booted = log(&run_ids[0]);
    assert!(
        booted.contains("info power (redfish): starting") && booted.contains("with PXE boot once"),
        "{booted}"
    );
    let reason = runs[1].failure_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Fake system no-such-node was not found"),
        "the run fails with the BMC's message: {reason}"
    );
    let refused = log(&run_ids[1]);
    assert!(
        refused.contains("error power (redfish): failed")
            && refused.contains("Fake system no-such-node was not found"),
        "{refused}"
    );
    // a 404 from the BMC is final: one attempt, not three
    assert_eq!(
        refused.matches("power (redfish): starting").count(),
        1,
        "{refused}"
    );
    let transitions = orchestrator
        .operator()
        .transitions(Some(&run_ids[1]))
        .await
        .unwrap();
    assert!(
        transitions
            .iter()
            .any(|record| record.event == "power_failed"),
        "{transitions:?}"
    );
}
