//! PXE for real, inside network namespaces these tests create (no address
//! outside them): dnsmasq answers registered MACs only, re-reads its
//! allowlist on SIGHUP without restarting, is restarted when it dies and
//! dies with the orchestrator; full-DHCP mode refuses to start beside
//! another DHCP server.
//!
//! The QEMU VM tests of the whole chain (BIOS through proxy DHCP, UEFI
//! through the TFTP chainload, answered by the real router) are in
//! `vetting-http/tests/vm_boot.rs`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use vetting_core::pxe::dnsmasq::{DhcpMode, HostEntry, PxeSettings};
use vetting_core::pxe::ipxe::{self, BootParams, Firmware};
use vetting_core::pxe::{MacAddress, PxeError, PxeSupervisor};

use crate::netns::{Lan, block_on_in_netns, netns_available, wait_until};

const VM_MAC: &str = "52:54:00:66:00:01";
const REGISTERED_MAC: &str = "52:54:00:66:00:11";
const UNREGISTERED_MAC: &str = "52:54:00:66:00:22";
const BOOT_URL: &str = "http://10.66.0.1:8080/ipxe/${mac}?platform=${platform}";

fn mac(text: &str) -> MacAddress {
    text.parse().unwrap()
}

fn full_dhcp_settings(state_dir: &Path) -> PxeSettings {
    let mut settings = PxeSettings::new(
        "br0",
        DhcpMode::Full {
            range_start: Ipv4Addr::new(10, 66, 0, 100),
            range_end: Ipv4Addr::new(10, 66, 0, 150),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            lease_seconds: 600,
            router_advertisement: true,
        },
        BOOT_URL,
        state_dir,
    );
    settings.log_dhcp = true;
    settings.other_server_probe_seconds = 5;
    settings.restart_backoff_initial_ms = 100;
    settings.restart_backoff_max_ms = 1_000;
    settings
}

fn proxy_dhcp_settings(state_dir: &Path) -> PxeSettings {
    let mut settings = full_dhcp_settings(state_dir);
    settings.dhcp = DhcpMode::Proxy {
        subnet: Ipv4Addr::new(10, 66, 0, 0),
    };
    settings
}

/// Runs busybox udhcpc once on `lan0` in `namespace`; the variables its
/// script saw on `bound`, or `None` when no lease came. A lease for a
/// dynamic address takes dnsmasq about 3 s (it pings the address first), so
/// a lease is waited for up to 8 s; an ignored client is given 3 s.
async fn udhcpc(namespace: &str, extra_options: &[&str]) -> Option<HashMap<String, String>> {
    udhcpc_with_tries(namespace, extra_options, 8).await
}

/// Like [`udhcpc`], for a client that is expected to get nothing.
async fn udhcpc_expecting_nothing(namespace: &str) -> Option<HashMap<String, String>> {
    udhcpc_with_tries(namespace, &[], 3).await
}

async fn udhcpc_with_tries(
    namespace: &str,
    extra_options: &[&str],
    tries: u32,
) -> Option<HashMap<String, String>> {
    let tries = tries.to_string();
    let folder = tempfile::tempdir().unwrap();
    let script = folder.path().join("script.sh");
    let bound = folder.path().join("bound.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            bound.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = tokio::process::Command::new("ip");
    command
        .args([
            "netns", "exec", namespace, "busybox", "udhcpc", "-i", "lan0", "-f", "-n", "-q", "-T",
            "1", "-t",
        ])
        .arg(&tries)
        .arg("-s")
        .arg(&script)
        .args(["-O", "bootfile"])
        .args(extra_options)
        .kill_on_drop(true);
    let output = command.output().await.unwrap();
    if !output.status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&bound).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
    )
}

fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has exited; only its parent's wait is missing.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn ipxe_scripts_carry_the_run_and_fit_the_firmware() {
    let extra = vec!["quiet".to_owned()];
    let params = BootParams {
        kernel_url: "http://10.66.0.1:8080/boot/vmlinuz",
        initrd_url: "http://10.66.0.1:8080/boot/initrd.img",
        orchestrator_url: "http://10.66.0.1:8080",
        run_id: "4f1c9a2e",
        token: "4f1c9a2e.bm9uY2U.c2lnbmF0dXJl",
        extra_cmdline: &extra,
        download_attempts: 4,
    };
    let script = ipxe::boot_script(&params).unwrap();
    assert!(script.starts_with("#!ipxe\n"));
    let kernel_line = script
        .lines()
        .find(|line| line.starts_with("kernel "))
        .unwrap();
    for expected in [
        "http://10.66.0.1:8080/boot/vmlinuz",
        "initrd=initrd",
        "vetting.url=http://10.66.0.1:8080",
        "vetting.run=4f1c9a2e",
        "vetting.token=4f1c9a2e.bm9uY2U.c2lnbmF0dXJl",
        "console=ttyS0,115200n8",
        " quiet",
    ] {
        assert!(
            kernel_line.contains(expected),
            "{expected} missing from {kernel_line}"
        );
    }
    assert!(script.contains("initrd --name initrd http://10.66.0.1:8080/boot/initrd.img"));
    // Downloads are retried a bounded number of times.
    assert_eq!(
        script
            .matches("iseq ${vetting_attempt} 4 && goto vetting_failed")
            .count(),
        2
    );
    assert!(script.contains(":vetting_kernel\n") && script.contains("goto vetting_kernel\n"));
    assert!(script.contains("\nboot ||\n"));
    assert!(
        format!("{params:?}").contains("<redacted>")
            && !format!("{params:?}").contains("c2lnbmF0dXJl")
    );

    // Values that would break the script or smuggle settings are refused.
    for bad_token in ["a b", "a\nchain http://evil", "${net0/mac}", ""] {
        let error = ipxe::boot_script(&BootParams {
            token: bad_token,
            ..params.clone()
        })
        .unwrap_err();
        assert_eq!(error.field, "token", "{bad_token:?}");
    }

    let bios = ipxe::exit_script(Firmware::Bios);
    assert!(
        bios.contains("\nsanboot --no-describe --drive 0x80 || exit\n"),
        "{bios}"
    );
    let uefi = ipxe::exit_script(Firmware::Uefi);
    assert!(
        uefi.lines().any(|line| line == "exit 1") && !uefi.contains("sanboot"),
        "{uefi}"
    );
    assert!(!bios.contains("vetting.token") && !uefi.contains("vetting.token"));
    let any = ipxe::exit_script_any_firmware();
    assert!(
        any.contains("iseq ${platform} efi && exit 1 ||")
            && any.contains("sanboot --no-describe --drive 0x80")
    );
}

#[test]
fn ipxe_request_path_gives_mac_and_firmware() {
    // What iPXE requests for `/ipxe/${mac}?platform=${platform}`.
    let segment = "52%3A54%3A00%3A66%3A00%3A01";
    assert_eq!(segment.parse::<MacAddress>().unwrap(), mac(VM_MAC));
    assert_eq!(Firmware::from_ipxe_platform("pcbios"), Some(Firmware::Bios));
    assert_eq!(Firmware::from_ipxe_platform("efi"), Some(Firmware::Uefi));
    for notation in [
        "52-54-00-66-00-01",
        "5254.0066.0001",
        "525400660001",
        "52:54:00:66:00:01",
    ] {
        assert_eq!(
            notation.parse::<MacAddress>().unwrap(),
            mac(VM_MAC),
            "{notation}"
        );
    }
    for malformed in [
        "52%3A54",
        "zz:54:00:66:00:01",
        "52:54:00:66:00:01:02",
        "%3A%3A%3A%3A%3A",
        "52:54:00:66:00:01?x",
    ] {
        let error = malformed.parse::<MacAddress>().unwrap_err();
        assert!(error.to_string().contains(malformed), "{error}");
    }
    assert_eq!(
        ipxe::dhcp_boot_url("http://10.66.0.1:8080"),
        "http://10.66.0.1:8080/ipxe/${mac}?platform=${platform}"
    );
}

#[test]
fn dnsmasq_answers_registered_macs_only_and_reloads_the_allowlist_without_restarting() {
    if !netns_available() {
        return;
    }
    let mut lan = Lan::new();
    let registered = lan.add_member("reg", Some(REGISTERED_MAC), None);
    let unregistered = lan.add_member("unreg", Some(UNREGISTERED_MAC), None);
    let registered_ns = lan.members[registered].name.clone();
    let unregistered_ns = lan.members[unregistered].name.clone();
    let state = tempfile::tempdir().unwrap();
    let settings = full_dhcp_settings(state.path());

    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        let fixed_host = HostEntry {
            mac: mac(REGISTERED_MAC),
            ipv4: Some(Ipv4Addr::new(10, 66, 0, 11)),
            name: Some("node-11".to_owned()),
        };
        let supervisor = PxeSupervisor::start(settings, vec![fixed_host.clone()])
            .await
            .unwrap();
        let first_pid = supervisor.dnsmasq_pid().unwrap();
        assert_eq!(process_name(first_pid), "dnsmasq");

        // A plain PXE client (no iPXE marks) with a registered MAC: its fixed
        // address, the TFTP server and the BIOS iPXE binary.
        let lease = udhcpc(&registered_ns, &[])
            .await
            .expect("registered MAC gets a lease");
        assert_eq!(lease["ip"], "10.66.0.11");
        assert_eq!(lease["siaddr"], "10.66.0.1");
        assert_eq!(lease["bootfile"], "undionly.kpxe");
        assert_eq!(lease["hostname"], "node-11");
        assert_eq!(
            supervisor.leased_address(mac(REGISTERED_MAC)).await,
            Some(Ipv4Addr::new(10, 66, 0, 11))
        );
        assert!(
            supervisor
                .leases()
                .await
                .unwrap()
                .iter()
                .any(|lease| lease.mac == mac(REGISTERED_MAC))
        );

        // Option 93 = 7 (x86-64 UEFI) gets the UEFI binary.
        let uefi = udhcpc(&registered_ns, &["-x", "0x5d:0007"])
            .await
            .expect("UEFI lease");
        assert_eq!(uefi["bootfile"], "snponly.efi");
        // iPXE (user class "iPXE") gets the script URL.
        let ipxe_client = udhcpc(&registered_ns, &["-x", "0x4d:69505845"])
            .await
            .expect("iPXE lease");
        assert_eq!(ipxe_client["bootfile"], BOOT_URL);

        // An unregistered MAC gets nothing at all.
        assert_eq!(
            udhcpc_expecting_nothing(&unregistered_ns).await,
            None,
            "unregistered MAC must get no lease"
        );

        // Registering it: the next DHCP exchange answers, same dnsmasq.
        supervisor
            .update_hosts(vec![
                fixed_host.clone(),
                HostEntry::new(mac(UNREGISTERED_MAC)),
            ])
            .await
            .unwrap();
        let added = udhcpc(&unregistered_ns, &[])
            .await
            .expect("newly registered MAC gets a lease");
        let address: Ipv4Addr = added["ip"].parse().unwrap();
        assert!(
            (Ipv4Addr::new(10, 66, 0, 100)..=Ipv4Addr::new(10, 66, 0, 150)).contains(&address),
            "{address}"
        );
        assert_eq!(
            supervisor.leased_address(mac(UNREGISTERED_MAC)).await,
            Some(address)
        );

        // Removing it again: nothing, still the same dnsmasq.
        supervisor.update_hosts(vec![fixed_host]).await.unwrap();
        assert_eq!(
            udhcpc_expecting_nothing(&unregistered_ns).await,
            None,
            "removed MAC must get no lease"
        );
        assert_eq!(
            supervisor.dnsmasq_pid(),
            Some(first_pid),
            "dnsmasq was restarted"
        );
        assert_eq!(supervisor.start_count(), 1);

        supervisor.shutdown().await;
        assert!(process_is_gone(first_pid), "dnsmasq survived shutdown");
    });
}

#[test]
fn killed_dnsmasq_is_restarted_and_serves_again() {
    if !netns_available() {
        return;
    }
    let mut lan = Lan::new();
    let client = lan.add_member("client", Some(REGISTERED_MAC), None);
    let client_ns = lan.members[client].name.clone();
    let state = tempfile::tempdir().unwrap();
    let settings = full_dhcp_settings(state.path());

    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        let supervisor = PxeSupervisor::start(settings, vec![HostEntry::new(mac(REGISTERED_MAC))])
            .await
            .unwrap();
        let first_pid = supervisor.dnsmasq_pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until(
            "dnsmasq to be restarted",
            Duration::from_secs(20),
            || async { supervisor.dnsmasq_pid().is_some_and(|pid| pid != first_pid) },
        )
        .await;
        assert_eq!(supervisor.start_count(), 2);
        let second_pid = supervisor.dnsmasq_pid().unwrap();
        assert_eq!(process_name(second_pid), "dnsmasq");
        assert!(
            udhcpc(&client_ns, &[]).await.is_some(),
            "restarted dnsmasq must serve"
        );
        // The restarted one re-reads the allowlist on SIGHUP too.
        supervisor.update_hosts(vec![]).await.unwrap();
        assert_eq!(udhcpc_expecting_nothing(&client_ns).await, None);
        supervisor.shutdown().await;
        assert!(process_is_gone(second_pid));
    });
}

#[test]
fn a_dnsmasq_that_cannot_start_is_reported_with_its_own_words() {
    if !netns_available() {
        return;
    }
    let lan = Lan::new();
    let state = tempfile::tempdir().unwrap();
    let mut proxy = proxy_dhcp_settings(state.path());
    proxy.interface = "nosuchif0".to_owned();
    let mut full = full_dhcp_settings(state.path());
    full.interface = "nosuchif0".to_owned();
    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        let error = PxeSupervisor::start(proxy, vec![]).await.unwrap_err();
        let PxeError::StartupFailed { output, .. } = &error else {
            panic!("wrong error: {error}")
        };
        assert!(output.contains("unknown interface nosuchif0"), "{output}");
        // Full DHCP mode cannot even check the interface for other servers.
        let error = PxeSupervisor::start(full, vec![]).await.unwrap_err();
        assert!(
            matches!(&error, PxeError::Probe { interface, .. } if interface == "nosuchif0"),
            "{error}"
        );
    });
}

const CHILD_NAMESPACE_VARIABLE: &str = "VETTING_TEST_PXE_CHILD_NAMESPACE";
const CHILD_STATE_VARIABLE: &str = "VETTING_TEST_PXE_CHILD_STATE";

/// Not a test of its own: the orchestrator stand-in that
/// `killing_the_orchestrator_with_sigkill_leaves_no_dnsmasq_or_iperf3` runs in a child
/// process (this test binary, re-invoked) and kills.
#[test]
#[ignore = "helper process for killing_the_orchestrator_with_sigkill_leaves_no_dnsmasq_or_iperf3"]
fn child_process_running_a_pxe_supervisor() {
    let (Ok(namespace), Ok(state)) = (
        std::env::var(CHILD_NAMESPACE_VARIABLE),
        std::env::var(CHILD_STATE_VARIABLE),
    ) else {
        return;
    };
    block_on_in_netns(&namespace, move || async move {
        let settings = proxy_dhcp_settings(Path::new(&state));
        let supervisor = PxeSupervisor::start(settings, vec![HostEntry::new(mac(VM_MAC))])
            .await
            .unwrap();
        println!("DNSMASQ_PID={}", supervisor.dnsmasq_pid().unwrap());
        // and the iperf3 server of the Network stage
        let iperf = vetting_core::iperf::IperfSupervisor::default();
        let config = vetting_core::iperf::IperfConfig {
            enabled: true,
            port: 0,
            bind: None,
        };
        iperf
            .ensure(&config, std::net::IpAddr::V4(Ipv4Addr::new(10, 66, 0, 1)))
            .await
            .expect("iperf3 starts");
        println!("IPERF3_PID={}", iperf.pid().await.unwrap());
        use std::io::Write as _;
        std::io::stdout().flush().unwrap();
        // Wait to be killed.
        std::future::pending::<()>().await;
    });
}

#[test]
fn killing_the_orchestrator_with_sigkill_leaves_no_dnsmasq_or_iperf3() {
    if !netns_available() {
        return;
    }
    let lan = Lan::new();
    let state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pxe::child_process_running_a_pxe_supervisor",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_NAMESPACE_VARIABLE, &lan.orchestrator.name)
        .env(CHILD_STATE_VARIABLE, state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    // libtest prints "test NAME ... " before the line, without a newline.
    let stdout = child.stdout.take().unwrap();
    let (pid_sender, pid_receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            for marker in ["DNSMASQ_PID=", "IPERF3_PID="] {
                if let Some((_, pid)) = line.split_once(marker) {
                    let _ = pid_sender.send(pid.trim().parse::<u32>().unwrap());
                }
            }
        }
    });
    let (Ok(dnsmasq_pid), Ok(iperf_pid)) = (
        pid_receiver.recv_timeout(Duration::from_secs(60)),
        pid_receiver.recv_timeout(Duration::from_secs(30)),
    ) else {
        let _ = child.kill();
        panic!(
            "the child never reported its daemons' pids: {:?}",
            child.wait()
        );
    };
    assert_eq!(process_name(dnsmasq_pid), "dnsmasq");
    assert_eq!(process_name(iperf_pid), "iperf3");

    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup code runs
    child.wait().unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (name, pid) in [("dnsmasq", dnsmasq_pid), ("iperf3", iperf_pid)] {
        while !process_is_gone(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} {pid} outlived its orchestrator"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn full_dhcp_mode_refuses_to_start_beside_another_dhcp_server() {
    if !netns_available() {
        return;
    }
    let mut lan = Lan::new();
    let other = lan.add_member("other", None, Some("10.66.0.2/24"));
    let other_ns = &lan.members[other];
    let folder = tempfile::tempdir().unwrap();
    let other_config = folder.path().join("other.conf");
    std::fs::write(
        &other_config,
        "port=0\nno-hosts\nno-resolv\nuser=root\ninterface=lan0\nbind-interfaces\n\
         dhcp-range=10.66.0.50,10.66.0.60,255.255.255.0,600s\n",
    )
    .unwrap();
    let lease_file = folder.path().join("other.leases");
    let other_log = folder.path().join("other.log");
    let mut other_server = other_ns.command("dnsmasq");
    other_server
        .arg("--keep-in-foreground")
        .arg("--log-facility=-")
        .arg(format!("--conf-file={}", other_config.display()))
        .arg(format!("--dhcp-leasefile={}", lease_file.display()))
        .arg("--pid-file")
        .stderr(std::fs::File::create(&other_log).unwrap());
    let state = tempfile::tempdir().unwrap();
    let settings = full_dhcp_settings(state.path());
    let proxy_settings = proxy_dhcp_settings(state.path());

    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        let _other_server = other_server.spawn().unwrap();
        wait_until(
            "the other DHCP server to listen",
            Duration::from_secs(10),
            || async {
                std::fs::read_to_string(&other_log)
                    .unwrap_or_default()
                    .contains("sockets bound")
            },
        )
        .await;
        let error = PxeSupervisor::start(settings, vec![HostEntry::new(mac(VM_MAC))])
            .await
            .expect_err("full DHCP must refuse to start");
        let PxeError::OtherDhcpServer {
            interface, server, ..
        } = &error
        else {
            panic!("wrong error: {error}");
        };
        assert_eq!(interface, "br0");
        assert_eq!(*server, Ipv4Addr::new(10, 66, 0, 2));
        let message = error.to_string();
        assert!(
            message.contains("br0") && message.contains("10.66.0.2"),
            "{message}"
        );

        // Beside a site DHCP server is what proxy mode is for.
        let proxy = PxeSupervisor::start(proxy_settings, vec![HostEntry::new(mac(VM_MAC))])
            .await
            .unwrap();
        proxy.shutdown().await;
    });
}
