//! The boot chain's HTTP side over real sockets: `/ipxe/{mac}` hands the
//! boot script with the run's token only while the host's run waits to
//! boot, the exit script after the agent's hello or for an unknown MAC, 400
//! for a malformed MAC, and in full-DHCP mode (real dnsmasq and a real DHCP
//! client, in network namespaces this test creates) the token only to the
//! address leased to that MAC. `/boot/` serves the live image with ranges.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../vetting-core/tests/it/netns.rs"]
mod netns;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use vetting_core::clock::SystemClock;
use vetting_core::config::{Config, Secret};
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::pxe::{DhcpMode, PxeSettings, PxeSupervisor};
use vetting_core::runs::Dispatcher;
use vetting_probes::protocol::Endpoint;

use self::netns::{Lan, block_on_in_netns, netns_available, wait_until};

const HOST_MAC: &str = "52:54:00:aa:00:01";

fn config(dir: &std::path::Path, public_url: &str) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        secret_key: Some(Secret("33".repeat(32))),
        public_url: Some(public_url.to_string()),
        ..Config::default()
    };
    config.iperf.enabled = false;
    config
}

/// A registered host with a run dispatched and powered on (manual power):
/// it waits in `Booting` for the agent's hello.
async fn booting_run(orchestrator: &Orchestrator) -> String {
    booting_run_of(orchestrator, "node-1", HOST_MAC).await
}

/// [`booting_run`] for a host of this name and MAC.
async fn booting_run_of(orchestrator: &Orchestrator, name: &str, mac: &str) -> String {
    let actor = Actor::operator("alice");
    let host = orchestrator
        .operator()
        .register_host(
            NewHost {
                name: name.into(),
                macs: vec![mac.into()],
                ..Default::default()
            },
            &actor,
        )
        .await
        .unwrap();
    let run = orchestrator
        .operator()
        .start_run(host.id, &actor)
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        orchestrator.clone(),
        std::sync::Arc::new(vetting_core::power::StoredPowerSettings::of(orchestrator)),
    );
    wait_until("the run to boot", Duration::from_secs(20), || async {
        dispatcher.reconcile_once().await.unwrap();
        orchestrator
            .operator()
            .get_run(&run.id)
            .await
            .unwrap()
            .state
            == RunState::Booting
    })
    .await;
    run.id
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Waits until the run's orchestrator log holds `wanted` (its lines of
/// `/ipxe` are written by a thread of their own), then returns it.
async fn log_with(orchestrator: &Orchestrator, run_id: &str, wanted: &str) -> String {
    wait_until(
        &format!("`{wanted}` in the run's log"),
        Duration::from_secs(10),
        || async { orchestrator_log(orchestrator, run_id).contains(wanted) },
    )
    .await;
    orchestrator_log(orchestrator, run_id)
}

fn orchestrator_log(orchestrator: &Orchestrator, run_id: &str) -> String {
    vetting_core::runlogs::oplog::read(&orchestrator.config().data_dir, run_id)
        .unwrap()
        .into_iter()
        .map(|line| format!("{} {}\n", line.level, line.text))
        .collect()
}

#[tokio::test]
async fn boot_script_until_hello_then_exit_script_and_malformed_macs_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let orchestrator = Orchestrator::open(config(dir.path(), &url), Arc::new(SystemClock))
        .await
        .unwrap()
        .with_bcrypt_cost(4);
    let app = vetting_http::service(vetting_http::AppState::new(orchestrator.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let run_id = booting_run(&orchestrator).await;

    // iPXE URL-encodes the colons of ${mac}
    let (status, script) = get(
        &client,
        &format!("{url}/ipxe/52%3A54%3A00%3AAA%3A00%3A01?platform=efi"),
    )
    .await;
    assert_eq!(status, 200, "{script}");
    let token = orchestrator.agent().token_for(&run_id).await.unwrap();
    assert!(script.starts_with("#!ipxe"), "{script}");
    assert!(
        script.contains(&format!(
            "kernel --name vmlinuz {url}/boot/vmlinuz initrd=initrd vetting.url={url} vetting.run={run_id} vetting.token={token}"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!("initrd --name initrd {url}/boot/initrd.img")),
        "{script}"
    );
    // the token in the script is one the agent API accepts
    for endpoint in Endpoint::ALL {
        orchestrator
            .agent()
            .authenticate(endpoint, &run_id, &token, None)
            .await
            .unwrap();
    }
    let log = log_with(
        &orchestrator,
        &run_id,
        "iPXE boot script for the live image handed to 127.0.0.1 (MAC 52:54:00:aa:00:01, firmware uefi)",
    )
    .await;
    assert!(
        log.contains("manual"),
        "the power action is in the run's log: {log}"
    );
    // the other notations of the same MAC get the same run
    for notation in ["52-54-00-aa-00-01", "5254.00aa.0001", "525400AA0001"] {
        let (status, again) = get(&client, &format!("{url}/ipxe/{notation}")).await;
        assert_eq!(status, 200);
        assert!(again.contains(&format!("vetting.run={run_id}")), "{again}");
    }

    // an unknown MAC exits to the local disk, fitted to the firmware
    let (status, unknown) = get(
        &client,
        &format!("{url}/ipxe/52:54:00:ff:ff:ff?platform=pcbios"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        unknown.contains("sanboot --no-describe --drive 0x80") && !unknown.contains("vetting."),
        "{unknown}"
    );

    // malformed MACs: 400 with a JSON error naming the value; nothing moves
    let before = orchestrator.operator().get_run(&run_id).await.unwrap();
    for bad in [
        "52:54:00:aa:00",
        "52:54:00:aa:00:01:02",
        "zz:54:00:aa:00:01",
        "not-a-mac",
        "52%3G54%3A00%3Aaa%3A00%3A01",
        "52:54:00:aa:00:01;reboot",
    ] {
        let response = client
            .get(format!("{url}/ipxe/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{bad}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap_or_default().contains("MAC"),
            "{bad}: {body}"
        );
    }
    let after = orchestrator.operator().get_run(&run_id).await.unwrap();
    assert_eq!(before.version, after.version);

    // after the agent's hello: boot once, the same MAC now exits
    let hello = orchestrator
        .agent()
        .authenticate(Endpoint::Hello, &run_id, &token, None)
        .await
        .unwrap();
    orchestrator.agent().agent_hello(&hello).await.unwrap();
    let (status, exit) = get(&client, &format!("{url}/ipxe/{HOST_MAC}?platform=efi")).await;
    assert_eq!(status, 200);
    assert!(
        exit.contains("\nexit 1\n") && !exit.contains("vetting.token") && !exit.contains("sanboot"),
        "{exit}"
    );
    let (_, exit_any) = get(&client, &format!("{url}/ipxe/{HOST_MAC}")).await;
    assert!(
        exit_any.contains("iseq ${platform} efi && exit 1 ||")
            && !exit_any.contains("vetting.token"),
        "{exit_any}"
    );
}

#[tokio::test]
async fn boot_files_are_served_with_range_requests() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let kernel: Vec<u8> = (0..102_400u32).map(|index| (index % 251) as u8).collect();
    std::fs::write(boot.join("vmlinuz"), &kernel).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let orchestrator = Orchestrator::open(config(dir.path(), &url), Arc::new(SystemClock))
        .await
        .unwrap();
    let app = vetting_http::service(vetting_http::AppState::new(orchestrator.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    let whole = client
        .get(format!("{url}/boot/vmlinuz"))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(whole.content_length(), Some(102_400));
    assert_eq!(whole.bytes().await.unwrap().as_ref(), kernel.as_slice());

    let part = client
        .get(format!("{url}/boot/vmlinuz"))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        "bytes 1000-1999/102400"
    );
    assert_eq!(part.content_length(), Some(1000));
    assert_eq!(part.bytes().await.unwrap().as_ref(), &kernel[1000..2000]);

    let tail = client
        .get(format!("{url}/boot/vmlinuz"))
        .header("Range", "bytes=102000-")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status().as_u16(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &kernel[102_000..]);

    let beyond = client
        .get(format!("{url}/boot/vmlinuz"))
        .header("Range", "bytes=200000-300000")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status().as_u16(), 416);

    let missing = client
        .get(format!("{url}/boot/initrd.img"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // nothing outside the boot folder (the secret key is one level up)
    for escape in [
        "/boot/../secret.key",
        "/boot/%2e%2e/secret.key",
        "/boot/..%2fsecret.key",
    ] {
        let response = client.get(format!("{url}{escape}")).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        assert!(
            status == 404 || status == 400,
            "{escape}: {status} {}",
            body.len()
        );
    }
}

#[test]
fn full_dhcp_mode_hands_the_token_only_to_the_leased_address() {
    if !netns_available() {
        return;
    }
    let mut lan = Lan::new();
    let host = lan.add_member("host", Some(HOST_MAC), None);
    let other = lan.add_member("other", None, Some("10.66.0.50/24"));
    let host_ns = lan.members[host].name.clone();
    let other_ns = lan.members[other].name.clone();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();

    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        let url = "http://10.66.0.1:8080";
        let orchestrator = Orchestrator::open(config(&data_dir, url), Arc::new(SystemClock))
            .await
            .unwrap()
            .with_bcrypt_cost(4);
        let run_id = booting_run(&orchestrator).await;
        let mut settings = PxeSettings::new(
            "br0",
            DhcpMode::Full {
                range_start: Ipv4Addr::new(10, 66, 0, 100),
                range_end: Ipv4Addr::new(10, 66, 0, 150),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                lease_seconds: 600,
                router_advertisement: false,
            },
            vetting_core::pxe::dhcp_boot_url(url),
            data_dir.join("pxe"),
        );
        settings.other_server_probe_seconds = 4;
        let hosts = vetting_core::boot::host_entries(
            &orchestrator.operator().list_hosts(false).await.unwrap(),
        );
        let supervisor = Arc::new(PxeSupervisor::start(settings, hosts).await.unwrap());
        let listener = tokio::net::TcpListener::bind("10.66.0.1:8080")
            .await
            .unwrap();
        let app = vetting_http::service(
            vetting_http::AppState::new(orchestrator.clone()).with_leases(supervisor.clone()),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        // the host gets its lease from dnsmasq and takes the address
        let output = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &host_ns,
                "busybox",
                "udhcpc",
                "-i",
                "lan0",
                "-f",
                "-n",
                "-q",
                "-T",
                "1",
                "-t",
                "8",
                "-s",
                "/bin/true",
            ])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "no lease: {output:?}");
        let leased = supervisor
            .leased_address(HOST_MAC.parse().unwrap())
            .await
            .expect("dnsmasq recorded the lease");
        netns::run(
            "ip",
            &[
                "-n",
                &host_ns,
                "addr",
                "add",
                &format!("{leased}/24"),
                "dev",
                "lan0",
            ],
        );

        let curl = |namespace: String| async move {
            let output = tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &namespace,
                    "curl",
                    "-s",
                    "--max-time",
                    "10",
                    "-w",
                    "\n%{http_code}",
                    &format!("{url}/ipxe/{HOST_MAC}?platform=pcbios"),
                ])
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let (body, status) = text.rsplit_once('\n').unwrap();
            (status.to_owned(), body.to_owned())
        };

        // another address on the LAN asks for the host's script: no token
        let (status, body) = curl(other_ns).await;
        assert_eq!(status, "403", "{body}");
        assert!(
            !body.contains("vetting.token") && body.contains("sanboot"),
            "{body}"
        );
        log_with(
            &orchestrator,
            &run_id,
            &format!("refused to 10.66.0.50: MAC {HOST_MAC} leased {leased}"),
        )
        .await;

        // the leased address gets the boot script with the token
        let (status, body) = curl(host_ns).await;
        assert_eq!(status, "200", "{body}");
        let token = orchestrator.agent().token_for(&run_id).await.unwrap();
        assert!(body.contains(&format!("vetting.token={token}")), "{body}");
        log_with(
            &orchestrator,
            &run_id,
            &format!("handed to {leased} (MAC {HOST_MAC}, firmware bios)"),
        )
        .await;
        drop(orchestrator);
        if let Ok(supervisor) = Arc::try_unwrap(supervisor) {
            supervisor.shutdown().await;
        }
    });
}

/// An orchestrator over `dir` with `clock`, served by `vetting_http::serve`
/// (the production server) on loopback: its URL.
async fn serve_with(
    dir: &std::path::Path,
    clock: Arc<dyn vetting_core::clock::Clock>,
) -> (String, Orchestrator) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let orchestrator = Orchestrator::open(config(dir, &url), clock)
        .await
        .unwrap()
        .with_bcrypt_cost(4);
    tokio::spawn(vetting_http::serve(
        listener,
        vetting_http::AppState::new(orchestrator.clone()),
        std::future::pending(),
    ));
    (url, orchestrator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipxe_flood_writes_one_line_a_window_with_the_count_left_out() {
    const FLOOD: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let clock = vetting_core::clock::ManualClock::new(1_700_000_000_000);
    let (url, orchestrator) = serve_with(dir.path(), Arc::new(clock.clone())).await;
    let run_id = booting_run(&orchestrator).await;
    let client = reqwest::Client::new();
    let script_url = format!("{url}/ipxe/{HOST_MAC}");
    let token = orchestrator.agent().token_for(&run_id).await.unwrap();
    use futures::StreamExt;
    futures::stream::iter(0..FLOOD)
        .map(|_| get(&client, &script_url))
        .buffer_unordered(8)
        .for_each(|(status, script)| {
            assert_eq!(status, 200);
            assert!(script.contains(&format!("vetting.token={token}")));
            std::future::ready(())
        })
        .await;
    // past the window, one more: its line counts the ones left out, and
    // (the writer keeps order) every line of the flood is written by then
    clock.advance_ms(vetting_core::boot::BOOT_LOG_WINDOW_MS);
    let (status, _) = get(&client, &script_url).await;
    assert_eq!(status, 200);
    let left_out = FLOOD - 1;
    let log = log_with(
        &orchestrator,
        &run_id,
        &format!("({left_out} more like it in the last window not logged)"),
    )
    .await;
    let handed = log
        .lines()
        .filter(|line| line.contains("handed to"))
        .count();
    assert_eq!(handed, 2, "{FLOOD} + 1 requests in two windows: {log}");
    // the audit keeps the address once a window too
    let fetches = orchestrator
        .operator()
        .audit_log(Some(&run_id))
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.action == "boot_script")
        .count();
    assert_eq!(fetches, 2);
}

/// Opens the read end of a FIFO without blocking when dropped, so a writer
/// blocked on it (the old code, on a runtime thread) is let go.
struct LetWriterGo(std::path::PathBuf);

impl Drop for LetWriterGo {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipxe_log_writes_are_off_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (url, orchestrator) = serve_with(dir.path(), Arc::new(SystemClock)).await;
    let run_id = booting_run(&orchestrator).await;
    // the run's log becomes a FIFO nobody reads: writing it blocks
    let file = vetting_core::runlogs::oplog::path(dir.path(), &run_id);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&file);
    nix::unistd::mkfifo(
        &file,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let _let_go = LetWriterGo(file.clone());
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let (status, script) = tokio::time::timeout(
            Duration::from_secs(10),
            get(&client, &format!("{url}/ipxe/{HOST_MAC}")),
        )
        .await
        .expect("/ipxe waited for its log write");
        assert_eq!(status, 200);
        assert!(script.contains("vetting.token="), "{script}");
    }
    // the line waits in the writer thread until the FIFO is read
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&file))
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("handed to 127.0.0.1"), "{text:?}");
}

#[tokio::test]
async fn a_hello_from_another_address_than_the_boot_script_is_logged_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (url, orchestrator) = serve_with(dir.path(), Arc::new(SystemClock)).await;
    let run_a = booting_run_of(&orchestrator, "node-1", HOST_MAC).await;
    let run_b = booting_run_of(&orchestrator, "node-2", "52:54:00:aa:00:02").await;
    let client = reqwest::Client::new();
    for mac in [HOST_MAC, "52:54:00:aa:00:02"] {
        let (status, script) = get(&client, &format!("{url}/ipxe/{mac}")).await;
        assert_eq!(status, 200);
        assert!(script.contains("vetting.token="), "{script}");
    }
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let hello = serde_json::json!({"protocol_version": 1, "agent_version": "t"});
    for (run, from) in [(&run_a, &elsewhere), (&run_b, &client)] {
        let token = orchestrator.agent().token_for(run).await.unwrap();
        let response = from
            .post(format!("{url}/api/v1/runs/{run}/hello"))
            .bearer_auth(token)
            .json(&hello)
            .send()
            .await
            .unwrap();
        // the token is the gate: the hello stands
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            orchestrator
                .operator()
                .get_run(run)
                .await
                .unwrap()
                .hello_at_ms
                .is_some()
        );
    }
    log_with(
        &orchestrator,
        &run_a,
        "agent hello from 127.0.0.2, but the boot script with the run's token was fetched by 127.0.0.1",
    )
    .await;
    let mismatches = |records: Vec<vetting_core::model::AuditRecord>| {
        records
            .into_iter()
            .filter(|record| record.action == "hello_address_mismatch")
            .map(|record| record.detail.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let found = mismatches(
        orchestrator
            .operator()
            .audit_log(Some(&run_a))
            .await
            .unwrap(),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    let detail: serde_json::Value = serde_json::from_str(&found[0]).unwrap();
    assert_eq!(detail["hello"], "127.0.0.2", "{detail}");
    assert_eq!(
        detail["boot_script_fetched_by"],
        serde_json::json!(["127.0.0.1"]),
        "{detail}"
    );
    // the same address for both: nothing said
    assert!(
        mismatches(
            orchestrator
                .operator()
                .audit_log(Some(&run_b))
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert!(!orchestrator_log(&orchestrator, &run_b).contains("agent hello from"));
}
