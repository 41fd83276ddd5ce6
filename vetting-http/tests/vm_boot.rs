//! The boot chain end to end with QEMU VMs (TCG) in network namespaces this
//! test creates: real dnsmasq (vetting's, supervised), real iPXE (a NIC
//! option ROM for BIOS, `snponly.efi` over TFTP for UEFI OVMF), and the real
//! `vetting-http` router answering `/ipxe/{mac}` and `/boot/` for a
//! registered host whose run waits to boot. The VM fetches the boot script
//! with its run's token and then asks for the live image's kernel; a host
//! without a run waiting gets the exit script and leaves for its disk: a FAT
//! disk whose `\EFI\BOOT\BOOTX64.EFI` (a GRUB image) prints a marker on the
//! serial console.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../vetting-core/tests/it/netns.rs"]
mod netns;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use vetting_core::clock::SystemClock;
use vetting_core::config::{Config, Secret};
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::pxe::{DhcpMode, MacAddress, PxeSettings, PxeSupervisor};
use vetting_core::runs::Dispatcher;

use self::netns::{Lan, block_on_in_netns, netns_available, run, wait_until};

const VM_MAC: &str = "52:54:00:66:00:01";
const URL: &str = "http://10.66.0.1:8080";
const VM_BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// What the local disk's boot loader prints (it is in no script vetting
/// serves, so only that disk's loader can print it).
const DISK_MARKER: &str = "vetting-test-disk: the firmware booted the local disk";

type Seen = Arc<Mutex<Vec<(String, SocketAddr)>>>;

/// An orchestrator for the LAN with the VM registered; with `run_waiting`,
/// a run dispatched and powered on (manual) that waits for the VM to boot.
async fn orchestrator(data_dir: &Path, run_waiting: bool) -> (Orchestrator, Option<String>) {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        secret_key: Some(Secret("44".repeat(32))),
        public_url: Some(URL.into()),
        ..Config::default()
    };
    config.iperf.enabled = false;
    let boot = config.boot_dir();
    std::fs::create_dir_all(&boot).unwrap();
    // not a kernel: the chain is proven once iPXE asks for it
    std::fs::write(boot.join("vmlinuz"), vec![0u8; 4096]).unwrap();
    std::fs::write(boot.join("initrd.img"), vec![0u8; 4096]).unwrap();
    let orchestrator = Orchestrator::open(config, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_bcrypt_cost(4);
    let actor = Actor::operator("alice");
    let host = orchestrator
        .operator()
        .register_host(
            NewHost {
                name: "vm-1".into(),
                macs: vec![VM_MAC.into()],
                ..Default::default()
            },
            &actor,
        )
        .await
        .unwrap();
    if !run_waiting {
        return (orchestrator, None);
    }
    let run = orchestrator
        .operator()
        .start_run(host.id, &actor)
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        orchestrator.clone(),
        std::sync::Arc::new(vetting_core::power::StoredPowerSettings::of(&orchestrator)),
    );
    wait_until(
        "the run to wait for boot",
        Duration::from_secs(20),
        || async {
            dispatcher.reconcile_once().await.unwrap();
            orchestrator
                .operator()
                .get_run(&run.id)
                .await
                .unwrap()
                .state
                == RunState::Booting
        },
    )
    .await;
    (orchestrator, Some(run.id))
}

/// The real router on 10.66.0.1:8080 (inside the namespace), recording the
/// path and peer of every request.
async fn serve(orchestrator: &Orchestrator, leases: Option<Arc<PxeSupervisor>>) -> Seen {
    let seen: Seen = Arc::default();
    let mut state = vetting_http::AppState::new(orchestrator.clone());
    if let Some(leases) = leases {
        state = state.with_leases(leases);
    }
    let recorder = seen.clone();
    let app = vetting_http::router(state).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let recorder = recorder.clone();
            async move {
                if let Some(ConnectInfo(peer)) =
                    request.extensions().get::<ConnectInfo<SocketAddr>>()
                {
                    let path = request
                        .uri()
                        .path_and_query()
                        .map(|path| path.to_string())
                        .unwrap_or_default();
                    recorder.lock().unwrap().push((path, *peer));
                }
                next.run(request).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("10.66.0.1:8080")
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    seen
}

fn requests_to(seen: &Seen, prefix: &str) -> Vec<(String, SocketAddr)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with(prefix))
        .cloned()
        .collect()
}

/// A QEMU VM (TCG) on tap `tap0`, killed on drop.
struct Vm {
    child: tokio::process::Child,
    serial_log: PathBuf,
}

impl Vm {
    fn start(folder: &Path, firmware_arguments: &[&str], nic: &str) -> Self {
        let serial_log = folder.join("serial.log");
        let sercon = folder.join("sercon");
        // iPXE prints to the serial port named here (0x3f8).
        std::fs::write(&sercon, [0xf8, 0x03]).unwrap();
        let child = tokio::process::Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-nodefaults",
                "-vga",
                "none",
                "-display",
                "none",
                "-no-reboot",
                "-m",
                "512",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial_log.display()))
            .arg("-fw_cfg")
            .arg(format!("name=etc/sercon-port,file={}", sercon.display()))
            .args(firmware_arguments)
            .args([
                "-netdev",
                "tap,id=n0,ifname=tap0,script=no,downscript=no",
                "-device",
                nic,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, serial_log }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn wait_for_request(seen: &Seen, prefix: &str, vm: &Vm) -> (String, SocketAddr) {
    let deadline = tokio::time::Instant::now() + VM_BOOT_TIMEOUT;
    loop {
        if let Some(request) = requests_to(seen, prefix).into_iter().next() {
            return request;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request for {prefix} within {VM_BOOT_TIMEOUT:?}; VM serial output:\n{}",
            vm.serial()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A FAT disk image (no partition table: OVMF reads it whole) whose
/// removable-media boot loader `\EFI\BOOT\BOOTX64.EFI` is a standalone
/// GRUB (grub-efi-amd64-bin) that prints [`DISK_MARKER`] and powers off.
fn local_disk_printing_a_marker(folder: &Path) -> PathBuf {
    let config = folder.join("grub.cfg");
    std::fs::write(&config, format!("echo \"{DISK_MARKER}\"\nhalt\n")).unwrap();
    let loader = folder.join("BOOTX64.EFI");
    run(
        "grub-mkstandalone",
        &[
            "--format=x86_64-efi",
            "--output",
            loader.to_str().unwrap(),
            "--install-modules=normal echo halt configfile memdisk tar",
            "--modules=halt",
            "--locales=",
            "--fonts=",
            "--themes=",
            &format!("boot/grub/grub.cfg={}", config.display()),
        ],
    );
    let disk = folder.join("disk.img");
    let image = disk.to_str().unwrap();
    run("mkfs.vfat", &["-C", image, "4096"]);
    run("mmd", &["-i", image, "::/EFI", "::/EFI/BOOT"]);
    run(
        "mcopy",
        &[
            "-i",
            image,
            loader.to_str().unwrap(),
            "::/EFI/BOOT/BOOTX64.EFI",
        ],
    );
    disk
}

fn pxe_settings(state_dir: &Path, dhcp: DhcpMode) -> PxeSettings {
    let mut settings = PxeSettings::new(
        "br0",
        dhcp,
        vetting_core::pxe::dhcp_boot_url(URL),
        state_dir,
    );
    settings.log_dhcp = true;
    settings
}

#[test]
fn bios_vm_boots_through_proxy_dhcp_beside_the_site_dhcp_server() {
    if !netns_available() {
        return;
    }
    let mut lan = Lan::new();
    let site = lan.add_member("site", None, Some("10.66.0.2/24"));
    lan.members[site].ip(&["addr", "add", "fd66::2/64", "dev", "lan0", "nodad"]);
    lan.add_tap("tap0");
    let folder = tempfile::tempdir().unwrap();
    // The site's DHCP server hands out the addresses (and IPv6 router
    // advertisements, which spare iPXE a 13 s wait).
    let site_config = folder.path().join("site.conf");
    let site_leases = folder.path().join("site.leases");
    std::fs::write(
        &site_config,
        format!(
            "port=0\nno-hosts\nno-resolv\nuser=root\ninterface=lan0\nbind-interfaces\n\
             dhcp-range=10.66.0.100,10.66.0.150,255.255.255.0,600s\ndhcp-leasefile={}\n\
             enable-ra\ndhcp-range=::,constructor:lan0,ra-only\n",
            site_leases.display()
        ),
    )
    .unwrap();
    let mut site_server = lan.members[site].command("dnsmasq");
    site_server
        .arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", site_config.display()))
        .arg("--pid-file");
    let folder_path = folder.path().to_path_buf();

    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        let _site_server = site_server.spawn().unwrap();
        let (orchestrator, run_id) = orchestrator(&folder_path.join("data"), true).await;
        let run_id = run_id.unwrap();
        let hosts = vetting_core::boot::host_entries(
            &orchestrator.operator().list_hosts(false).await.unwrap(),
        );
        let settings = pxe_settings(
            &folder_path.join("pxe"),
            DhcpMode::Proxy {
                subnet: Ipv4Addr::new(10, 66, 0, 0),
            },
        );
        let supervisor = PxeSupervisor::start(settings, hosts).await.unwrap();
        let seen = serve(&orchestrator, None).await;
        let vm = Vm::start(
            &folder_path,
            &["-boot", "n"],
            &format!("e1000,netdev=n0,mac={VM_MAC},romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom"),
        );

        let (path, peer) = wait_for_request(&seen, "/ipxe/", &vm).await;
        let (mac_segment, query) = path
            .trim_start_matches("/ipxe/")
            .split_once("?platform=")
            .unwrap();
        assert_eq!(
            mac_segment.parse::<MacAddress>().unwrap(),
            VM_MAC.parse().unwrap()
        );
        assert_eq!(query, "pcbios");
        // The address came from the site's server, not from vetting.
        let site_lease = std::fs::read_to_string(&site_leases).unwrap_or_default();
        assert!(
            site_lease.contains(VM_MAC) && site_lease.contains(&peer.ip().to_string()),
            "{site_lease}"
        );
        assert!(supervisor.leases().await.unwrap().is_empty());

        // iPXE ran vetting's boot script: it asks for the live image's kernel
        let (kernel, kernel_peer) = wait_for_request(&seen, "/boot/", &vm).await;
        assert_eq!(kernel, "/boot/vmlinuz");
        assert_eq!(kernel_peer.ip(), peer.ip());
        assert!(
            vm.serial()
                .contains(&format!("booting the live image for run {run_id}")),
            "{}",
            vm.serial()
        );
        let log =
            vetting_core::runlogs::oplog::read(&orchestrator.config().data_dir, &run_id).unwrap();
        assert!(
            log.iter().any(|line| line.text.contains(&format!(
                "handed to {} (MAC {VM_MAC}, firmware bios)",
                peer.ip()
            ))),
            "{log:?}"
        );
        vm.stop().await;
        supervisor.shutdown().await;
    });
}

#[test]
fn uefi_vm_chainloads_ipxe_over_tftp_and_without_a_run_exits_to_disk() {
    if !netns_available() {
        return;
    }
    if !vetting_testkit::prerequisite(vetting_testkit::all_of([
        vetting_testkit::program("qemu-system-x86_64"),
        vetting_testkit::file("/usr/share/ovmf/OVMF.fd", "OVMF (ovmf)"),
        vetting_testkit::program("grub-mkstandalone"),
        vetting_testkit::file(
            "/usr/lib/grub/x86_64-efi",
            "GRUB's EFI modules (grub-efi-amd64-bin)",
        ),
        vetting_testkit::program("mkfs.vfat"),
        vetting_testkit::program("mcopy"),
    ])) {
        return;
    }
    let lan = Lan::new();
    lan.add_tap("tap0");
    let folder = tempfile::tempdir().unwrap();
    let folder_path = folder.path().to_path_buf();

    block_on_in_netns(&lan.orchestrator.name.clone(), move || async move {
        // registered, but no run waits: boot once means the local disk
        let (orchestrator, _) = orchestrator(&folder_path.join("data"), false).await;
        let hosts = vetting_core::boot::host_entries(
            &orchestrator.operator().list_hosts(false).await.unwrap(),
        );
        let settings = pxe_settings(
            &folder_path.join("pxe"),
            DhcpMode::Full {
                range_start: Ipv4Addr::new(10, 66, 0, 100),
                range_end: Ipv4Addr::new(10, 66, 0, 150),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                lease_seconds: 600,
                router_advertisement: true,
            },
        );
        let supervisor = Arc::new(PxeSupervisor::start(settings, hosts).await.unwrap());
        let seen = serve(&orchestrator, Some(supervisor.clone())).await;
        // virtio-net without an iPXE option ROM: OVMF's own PXE client asks
        // with client architecture 7 and gets snponly.efi over TFTP. The
        // local disk comes second in the boot order; OVMF's IPv6 stack is
        // off, so that no PXEv6 or HTTPv6 attempt stands before the disk.
        let disk = local_disk_printing_a_marker(&folder_path);
        let vm = Vm::start(
            &folder_path,
            &[
                "-bios",
                "/usr/share/ovmf/OVMF.fd",
                "-fw_cfg",
                "name=opt/org.tianocore/IPv6PXESupport,string=no",
                "-fw_cfg",
                "name=opt/org.tianocore/IPv6Support,string=no",
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=disk0,readonly=on",
                    disk.display()
                ),
                "-device",
                "virtio-blk-pci,drive=disk0,bootindex=2",
            ],
            &format!("virtio-net-pci,netdev=n0,mac={VM_MAC},romfile=,bootindex=1"),
        );

        let (path, peer) = wait_for_request(&seen, "/ipxe/", &vm).await;
        assert!(path.ends_with("?platform=efi"), "{path}");
        assert!(
            vm.serial().contains("snponly.efi"),
            "OVMF did not load snponly.efi:\n{}",
            vm.serial()
        );
        // The request comes from the address dnsmasq leased to that MAC.
        let std::net::IpAddr::V4(peer_address) = peer.ip() else {
            panic!("IPv6 peer {peer}")
        };
        assert_eq!(
            supervisor.leased_address(VM_MAC.parse().unwrap()).await,
            Some(peer_address)
        );
        wait_until(
            "the VM to run the exit script",
            Duration::from_secs(30),
            || async {
                vm.serial()
                    .contains("no run is waiting to boot on this host")
            },
        )
        .await;
        // iPXE's `exit 1` hands back to the firmware, which tries the NIC's
        // HTTP boot (about a minute under TCG) and then boots the disk
        let deadline = tokio::time::Instant::now() + VM_BOOT_TIMEOUT;
        while !vm.serial().contains(DISK_MARKER) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the firmware did not boot the local disk after the exit script within {VM_BOOT_TIMEOUT:?}; VM serial output:\n{}",
                vm.serial()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let serial = vm.serial();
        let exit_script = serial
            .find("no run is waiting to boot on this host")
            .unwrap();
        assert!(
            serial[exit_script..].contains(DISK_MARKER),
            "the disk booted before the exit script ran:\n{serial}"
        );
        assert!(requests_to(&seen, "/boot/").is_empty());
        vm.stop().await;
    });
}
