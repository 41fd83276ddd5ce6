//! fio, badblocks, wipefs, blkid and lsblk: the fio fixtures, and the real
//! tools run on small loop devices (root and /dev/loop-control needed; the
//! tests say why they skip otherwise), their outputs going through the same
//! parsers and verdicts as on a real server.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Mutex;

use serde_json::json;
use vetting_probes::parsers::{badblocks, blkid, fio, lsblk, wipefs};
use vetting_probes::{ParseError, Status, Thresholds, Tool, Verdict, parse_and_judge};

use crate::common::{fixture, fixture_names};

/// Size of every loop device backing file.
const LOOP_SIZE_BYTES: u64 = 16 * 1024 * 1024;

/// How many times `losetup -f` is retried when another test took the same
/// free device between the kernel's answer and the attach.
const LOSETUP_ATTEMPTS: usize = 5;

/// Serializes `losetup -f --show` within this test binary.
static LOSETUP: Mutex<()> = Mutex::new(());

/// A loop device over a temporary file, detached on drop.
pub(crate) struct LoopDevice {
    pub(crate) path: String,
    backing: tempfile::NamedTempFile,
}

impl LoopDevice {
    pub(crate) fn new() -> LoopDevice {
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(LOOP_SIZE_BYTES).unwrap();
        let _guard = LOSETUP
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut last_error = String::new();
        for _ in 0..LOSETUP_ATTEMPTS {
            let output = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(backing.path())
                .output()
                .expect("running losetup");
            if output.status.success() {
                let path = String::from_utf8(output.stdout).unwrap().trim().to_owned();
                return LoopDevice { path, backing };
            }
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        panic!("losetup -f --show failed {LOSETUP_ATTEMPTS} times: {last_error}");
    }

    /// The kernel name (`loop3`), as wipefs and lsblk print it.
    fn name(&self) -> &str {
        self.path.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

/// Runs a tool; returns stdout followed by stderr, as the agent keeps them,
/// and the exit code.
fn run(program: &str, args: &[&str]) -> (Vec<u8>, Option<i32>) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    let mut combined = output.stdout;
    combined.extend_from_slice(&output.stderr);
    (combined, output.status.code())
}

/// Whether the loop-device tests can run here (`vetting_testkit::prerequisite`).
fn loop_devices_usable(tools: &[&str]) -> bool {
    vetting_testkit::prerequisite(vetting_testkit::all_of(
        std::iter::once(vetting_testkit::loop_devices())
            .chain(tools.iter().map(|tool| vetting_testkit::program(tool))),
    ))
}

#[track_caller]
fn assert_reason(verdict: &Verdict, status: Status, needle: &str) {
    assert!(
        verdict
            .messages(status)
            .any(|message| message.contains(needle)),
        "no {status} reason containing {needle:?} in {:#?}",
        verdict.reasons
    );
}

// ---------------------------------------------------------------- fio ----

#[test]
fn every_fio_fixture_passes_and_keeps_its_throughput() {
    // EXPECTED.md: fio 5 pass. Duplicate "0.00" keys, a duplicated
    // "filename" and fio 2.x's KiB io_bytes are all in this set.
    let names = fixture_names("fio");
    assert_eq!(names.len(), 5);
    for name in &names {
        let run = fio::parse(&fixture(&format!("fio/{name}")))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let verdict = fio::verdict(&run);
        assert_eq!(verdict, Verdict::pass(), "{name}");
        let summary = json!({
            "status": verdict.status,
            "version": run.version,
            "jobs": run.jobs.iter().map(|job| json!({
                "name": job.name,
                "error": job.error,
                "verify": job.verify,
                "read": [job.read.io_bytes, job.read.bandwidth_bytes_per_second, job.read.iops, job.read.runtime_ms],
                "write": [job.write.io_bytes, job.write.bandwidth_bytes_per_second, job.write.iops, job.write.runtime_ms],
            })).collect::<Vec<_>>(),
            "disk_util": run.disk_util,
        });
        insta::assert_json_snapshot!(name.trim_end_matches(".json"), summary);
    }
}

#[test]
fn fio_2x_io_bytes_are_kib_and_fio_3_bytes() {
    let old = fio::parse(&fixture("fio/pkb-7fb0c9d8-0_fio.json")).unwrap();
    assert_eq!(old.jobs[0].read.io_bytes, 1_294_256 * 1024);
    assert_eq!(old.jobs[0].read.bandwidth_bytes_per_second, 129_386 * 1024);
    assert!(!old.jobs[0].do_verify, "global do_verify 0");
    let new = fio::parse(&fixture(
        "fio/virtualclient-FIOExample-windows-fio-3.26.json",
    ))
    .unwrap();
    assert_eq!(new.jobs[0].write.io_bytes, 1_073_741_824);
    assert_eq!(new.jobs[0].write.bandwidth_bytes_per_second, 8_876_980);
}

#[test]
fn fio_verify_on_a_loop_device_passes() {
    if !loop_devices_usable(&["fio"]) {
        return;
    }
    let device = LoopDevice::new();
    let filename = format!("--filename={}", device.path);
    let (output, _) = run(
        "fio",
        &[
            "--name=vetting-verify",
            &filename,
            "--rw=write",
            "--bs=64k",
            "--size=8M",
            "--direct=1",
            "--verify=crc32c",
            "--verify_state_save=0",
            "--verify_state_save=0",
            "--do_verify=1",
            "--output-format=json",
        ],
    );
    let report = parse_and_judge(Tool::Fio, &output, &Thresholds::default()).unwrap();
    assert_eq!(
        report.verdict,
        Verdict::pass(),
        "{}",
        String::from_utf8_lossy(&output)
    );
    let run = fio::parse(&output).unwrap();
    let job = &run.jobs[0];
    assert_eq!(job.verify.as_deref(), Some("crc32c"));
    assert_eq!(job.write.io_bytes, 8 * 1024 * 1024);
    assert_eq!(
        job.read.io_bytes,
        8 * 1024 * 1024,
        "the verify phase read it all back"
    );
}

#[test]
fn fio_fails_on_a_real_verify_error() {
    if !vetting_testkit::prerequisite(vetting_testkit::program("fio")) {
        return;
    }
    // A plain file: no root needed. Write with crc32c headers, corrupt one
    // block behind fio's back, then run only the verify phase.
    let file = tempfile::NamedTempFile::new().unwrap();
    let filename = format!("--filename={}", file.path().display());
    let job = [
        "--name=vetting-corrupt",
        &filename,
        "--rw=write",
        "--bs=64k",
        "--size=4M",
        "--verify=crc32c",
        "--verify_state_save=0",
    ];
    let (write_output, code) = run(
        "fio",
        &[&job[..], &["--do_verify=0", "--output-format=json"]].concat(),
    );
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&write_output));
    assert_eq!(
        fio::verdict(&fio::parse(&write_output).unwrap()),
        Verdict::pass()
    );

    let corrupt_block_offset = 3 * 64 * 1024 + 100;
    OpenOptions::new()
        .write(true)
        .open(file.path())
        .unwrap()
        .write_all_at(b"not what fio wrote here", corrupt_block_offset)
        .unwrap();

    let (verify_output, _) = run(
        "fio",
        &[&job[..], &["--verify_only", "--output-format=json"]].concat(),
    );
    let run = fio::parse(&verify_output)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&verify_output)));
    let verdict = fio::verdict(&run);
    assert_eq!(verdict.status, Status::Fail);
    assert_reason(&verdict, Status::Fail, "fio job 'vetting-corrupt' error 84");
    assert_reason(&verdict, Status::Fail, "verify failed at file");
}

#[test]
fn fio_text_around_the_json_is_kept_and_garbage_is_an_error() {
    let mut input = b"fio: pid=1, err=84/file:io_u.c:2152, func=io_u_sync_complete, error=Invalid or incomplete multibyte or wide character\n".to_vec();
    input.extend_from_slice(&fixture(
        "fio/virtualclient-FIOExample-windows-fio-3.26.json",
    ));
    input.extend_from_slice(
        b"\nverify: bad magic header 0, wanted acca at file /dev/sdb offset 4096, length 4096\n",
    );
    let run = fio::parse(&input).unwrap();
    assert_eq!(run.messages.len(), 2);
    let verdict = fio::verdict(&run);
    assert_reason(
        &verdict,
        Status::Fail,
        "1 verify failure message: verify: bad magic header",
    );

    for input in [
        &b""[..],
        b"{}",
        b"{\"jobs\": []}",
        b"no json here",
        b"{\"jobs\": [{\"jobname\": \"x\"}]}",
        b"{\"jobs\": [",
    ] {
        assert!(
            fio::report(input, &Thresholds::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

// ---------------------------------------------------------- badblocks ----

#[test]
fn badblocks_write_test_on_a_loop_device_passes() {
    if !loop_devices_usable(&["badblocks"]) {
        return;
    }
    let device = LoopDevice::new();
    let (output, _) = run("badblocks", &["-wsv", "-b", "4096", &device.path]);
    let report = parse_and_judge(Tool::Badblocks, &output, &Thresholds::default())
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output)));
    assert_eq!(report.verdict, Verdict::pass());
    let run = badblocks::parse(&output).unwrap();
    assert_eq!(run.mode.as_deref(), Some("read-write"));
    assert_eq!((run.first_block, run.last_block), (Some(0), Some(4095)));
    assert_eq!(run.patterns, ["0xaa", "0x55", "0xff", "0x00"]);
    assert_eq!(
        run.passes,
        [badblocks::BadblocksPass {
            bad_blocks_found: 0,
            read_errors: Some(0),
            write_errors: Some(0),
            corruption_errors: Some(0),
        }]
    );
}

// A real badblocks failure needs a failing disk, which this machine cannot
// provide (no device-mapper error target in its kernel). This output is
// written from e2fsprogs' misc/badblocks.c formats: block numbers on stdout,
// progress with backspaces and the summary on stderr.
const BADBLOCKS_FAILING: &str = "Checking for bad blocks in read-write mode\n\
From block 0 to 3906469\n\
Testing with pattern 0xaa:  12.34% done, 0:05 elapsed. (0/0/0 errors)\u{8}\u{8}\u{8}\u{8}\u{8}done                                                 \n\
Reading and comparing:  45.00% done, 0:10 elapsed. (0/0/2 errors)\u{8}\u{8}\u{8}\u{8}done                                                 \n\
Pass completed, 3 bad blocks found. (1/0/2 errors)\n\
1048576\n1048577\n2000000\n";

#[test]
fn badblocks_failure_names_the_blocks() {
    let report = parse_and_judge(
        Tool::Badblocks,
        BADBLOCKS_FAILING.as_bytes(),
        &Thresholds::default(),
    )
    .unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert_eq!(
        report.verdict.messages(Status::Fail).collect::<Vec<_>>(),
        [
            "badblocks found 3 bad blocks > 0 (1 read, 0 write, 2 corruption errors): 1048576, 1048577, 2000000"
        ]
    );
}

#[test]
fn badblocks_many_bad_blocks_are_summarized() {
    let mut output = String::from("Checking for bad blocks (read-only test): done\n");
    for block in 100..150 {
        output.push_str(&format!("{block}\n"));
    }
    output.push_str("Pass completed, 50 bad blocks found. (50/0/0 errors)\n");
    let verdict = badblocks::verdict(&badblocks::parse(output.as_bytes()).unwrap());
    assert_reason(&verdict, Status::Fail, "badblocks found 50 bad blocks > 0");
    assert_reason(
        &verdict,
        Status::Fail,
        "100, 101, 102, 103, 104, 105, 106, 107, 108, 109 and 40 more",
    );
}

#[test]
fn badblocks_without_a_summary_never_passes() {
    // Cut short (a timeout killed it): an error that says so, and keeps the
    // blocks listed so far.
    let truncated = &BADBLOCKS_FAILING[..BADBLOCKS_FAILING.find("Pass completed").unwrap()];
    let error = badblocks::report(truncated.as_bytes(), &Thresholds::default()).unwrap_err();
    assert!(
        error.to_string().contains("badblocks did not complete"),
        "{error}"
    );
    let with_blocks = format!("{truncated}1048576\n");
    let error = badblocks::parse(with_blocks.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("1 bad blocks listed before it stopped: 1048576"),
        "{error}"
    );
    // badblocks refusing a disk too large for 32-bit block numbers.
    let refused = b"badblocks: Value too large for defined data type invalid end block (4294967296): must be 32-bit value\n";
    let error = badblocks::parse(refused).unwrap_err().to_string();
    assert!(
        error.contains("last message: badblocks: Value too large"),
        "{error}"
    );
    assert!(matches!(
        badblocks::parse(b" \n"),
        Err(ParseError::Empty { .. })
    ));
}

// ------------------------------------------------- wipefs, blkid, lsblk ----

/// Probes a device the way the wipe probe does.
fn probe(device: &LoopDevice) -> (Verdict, Verdict) {
    let (wipefs_output, code) = run("wipefs", &["-J", &device.path]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&wipefs_output));
    let wipefs_verdict = wipefs::verdict(&wipefs::parse_or_empty(&wipefs_output).unwrap());
    let (blkid_output, code) = run("blkid", &["-p", "-o", "export", &device.path]);
    // 0: something found; 2: nothing found (and no output).
    assert!(matches!(code, Some(0 | 2)), "blkid exit {code:?}");
    let blkid_verdict = blkid::verdict(&blkid::parse_or_empty(&blkid_output).unwrap());
    (wipefs_verdict, blkid_verdict)
}

#[test]
fn wipe_probe_on_a_clean_device_passes() {
    if !loop_devices_usable(&["wipefs", "blkid"]) {
        return;
    }
    let device = LoopDevice::new();
    let (wipefs_verdict, blkid_verdict) = probe(&device);
    assert_eq!(wipefs_verdict, Verdict::pass());
    assert_eq!(blkid_verdict, Verdict::pass());
    // blkid prints nothing on a clean device: `report` refuses empty input,
    // `parse_or_empty` reads it as "no signatures".
    let (blkid_output, code) = run("blkid", &["-p", "-o", "export", &device.path]);
    assert_eq!((blkid_output.is_empty(), code), (true, Some(2)));
    assert!(matches!(
        blkid::report(&blkid_output, &Thresholds::default()),
        Err(ParseError::Empty { .. })
    ));
    assert!(matches!(
        wipefs::report(b"", &Thresholds::default()),
        Err(ParseError::Empty { .. })
    ));
    assert_eq!(
        wipefs::parse_or_empty(b"").unwrap(),
        wipefs::WipefsReport::default()
    );
}

#[test]
fn wipe_probe_finds_a_gpt_partition_table() {
    if !loop_devices_usable(&["wipefs", "blkid", "sfdisk"]) {
        return;
    }
    let device = LoopDevice::new();
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", &device.path])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,4M\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());

    let (wipefs_verdict, blkid_verdict) = probe(&device);
    assert_eq!(wipefs_verdict.status, Status::Fail);
    let on = format!("on {}", device.name());
    assert_reason(
        &wipefs_verdict,
        Status::Fail,
        &format!("wipe probe: found gpt at offset 0x200 {on}"),
    );
    assert_reason(
        &wipefs_verdict,
        Status::Fail,
        "wipe probe: found PMBR at offset 0x1fe",
    );
    // The backup GPT header sits in the last sector.
    assert_reason(
        &wipefs_verdict,
        Status::Fail,
        &format!("found gpt at offset 0x{:x}", LOOP_SIZE_BYTES - 512),
    );
    assert_eq!(blkid_verdict.status, Status::Fail);
    assert_reason(
        &blkid_verdict,
        Status::Fail,
        &format!("wipe probe: found a gpt partition table on {}", device.path),
    );
}

#[test]
fn wipe_probe_finds_a_handwritten_mbr() {
    if !loop_devices_usable(&["wipefs", "blkid"]) {
        return;
    }
    let device = LoopDevice::new();
    // One Linux partition (type 0x83) from LBA 2048, 8192 sectors, and the
    // 0x55AA boot signature: what fdisk writes, without needing fdisk.
    let mut sector = [0u8; 512];
    sector[446 + 4] = 0x83;
    sector[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    sector[446 + 12..446 + 16].copy_from_slice(&8192u32.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    device.backing.as_file().write_all_at(&sector, 0).unwrap();

    let (wipefs_verdict, blkid_verdict) = probe(&device);
    assert_eq!(
        wipefs_verdict.messages(Status::Fail).collect::<Vec<_>>(),
        [format!(
            "wipe probe: found dos at offset 0x1fe on {}",
            device.name()
        )]
    );
    assert_reason(
        &blkid_verdict,
        Status::Fail,
        "wipe probe: found a dos partition table",
    );
}

#[test]
fn wipe_probe_finds_an_ext4_filesystem() {
    if !loop_devices_usable(&["wipefs", "blkid", "mkfs.ext4"]) {
        return;
    }
    let device = LoopDevice::new();
    let (output, code) = run("mkfs.ext4", &["-q", "-F", "-L", "vetting", &device.path]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&output));

    let (wipefs_output, _) = run("wipefs", &["-J", &device.path]);
    let report = parse_and_judge(Tool::Wipefs, &wipefs_output, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert_reason(
        &report.verdict,
        Status::Fail,
        &format!(
            "wipe probe: found ext4 at offset 0x438 on {} (label vetting, UUID ",
            device.name()
        ),
    );
    let (_, blkid_verdict) = probe(&device);
    assert_reason(
        &blkid_verdict,
        Status::Fail,
        &format!(
            "wipe probe: found ext4 on {} (filesystem, label vetting, UUID ",
            device.path
        ),
    );
}

#[test]
fn blkid_blocks_escapes_and_ambivalent_results() {
    let input = b"DEVNAME=/dev/sdb\nLABEL=my\\ data\nTYPE=xfs\nUSAGE=filesystem\n\n\
DEVNAME=/dev/sdc\nPTUUID=92df59b3\nPTTYPE=dos\n\n\
/dev/sdd: ambivalent result (probably more filesystems on the device, use wipefs(8) to see more details)\n";
    let report = blkid::parse(input).unwrap();
    assert_eq!(report.devices.len(), 3);
    assert_eq!(report.devices[0].tags["LABEL"], "my data");
    let verdict = blkid::verdict(&report);
    assert_reason(
        &verdict,
        Status::Fail,
        "wipe probe: found xfs on /dev/sdb (filesystem, label my data)",
    );
    assert_reason(
        &verdict,
        Status::Fail,
        "wipe probe: found a dos partition table on /dev/sdc (PTUUID 92df59b3)",
    );
    assert_reason(&verdict, Status::Fail, "ambivalent result on /dev/sdd");
    for input in [&b"random words\n"[..], b"lower=case\n", b"\xff\xfe", b""] {
        assert!(
            blkid::report(input, &Thresholds::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn lsblk_on_a_loop_device_is_inventory_only() {
    if !loop_devices_usable(&["lsblk"]) {
        return;
    }
    let device = LoopDevice::new();
    let (output, code) = run("lsblk", &["-J", "-b", "-O", &device.path]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&output));
    let report = parse_and_judge(Tool::Lsblk, &output, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict, Verdict::pass());
    let parsed = lsblk::parse(&output).unwrap();
    let loop_device = &parsed.devices[0];
    assert_eq!(loop_device.name, device.name());
    assert_eq!(loop_device.path.as_deref(), Some(device.path.as_str()));
    assert_eq!(loop_device.size_bytes, Some(LOOP_SIZE_BYTES));
    assert_eq!(loop_device.device_type.as_deref(), Some("loop"));
    assert_eq!(loop_device.removable, Some(false));
}

#[test]
fn lsblk_old_string_format_and_children() {
    // util-linux before 2.33 printed every value as a string and padded
    // the model; a disk with a partition holding an LVM volume.
    let input = br#"{"blockdevices": [
        {"name": "sda", "size": "1000204886016", "rota": "1", "rm": "0", "tran": "sata",
         "model": "ST1000DM003-1CH1  ", "serial": "Z1D5K0XX", "wwn": "0x5000c5006c1e2c3d",
         "type": "disk", "fstype": null, "pttype": "gpt", "children": [
            {"name": "sda1", "size": "1000203091968", "rota": "1", "rm": "0", "type": "part",
             "fstype": "LVM2_member", "children": [
                {"name": "vg-root", "size": "53687091200", "rota": "1", "rm": "0", "type": "lvm",
                 "fstype": "ext4", "mountpoint": "/"}]}]},
        {"name": "sdb", "size": "931.5G", "rota": "0", "rm": "1", "tran": "usb", "type": "disk"}
    ]}"#;
    let report = lsblk::parse(input).unwrap();
    let all = report.flatten();
    let names: Vec<&str> = all.iter().map(|device| device.name.as_str()).collect();
    assert_eq!(names, ["sda", "sda1", "vg-root", "sdb"]);
    let disk = all[0];
    assert_eq!(disk.size_bytes, Some(1_000_204_886_016));
    assert_eq!(disk.rotational, Some(true));
    assert_eq!(disk.model.as_deref(), Some("ST1000DM003-1CH1"));
    assert_eq!(all[2].mountpoints, ["/"]);
    assert_eq!(
        (all[3].size_bytes, all[3].size_text.as_deref()),
        (None, Some("931.5G"))
    );
    assert_eq!(all[3].removable, Some(true));
    for input in [
        &b""[..],
        b"{}",
        b"{\"blockdevices\": [{}]}",
        b"{\"blockdevices\": [",
    ] {
        assert!(
            lsblk::report(input, &Thresholds::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn truncated_outputs_never_pass() {
    // Every prefix of a failing badblocks run: an error, or (once the
    // summary is in) a failure.
    for cut in 0..BADBLOCKS_FAILING.len() {
        let Some(prefix) = BADBLOCKS_FAILING.get(..cut) else {
            continue;
        };
        if let Ok(run) = badblocks::parse(prefix.as_bytes()) {
            assert_eq!(
                badblocks::verdict(&run).status,
                Status::Fail,
                "cut at {cut}"
            );
        }
    }
    for name in fixture_names("fio") {
        let input = fixture(&format!("fio/{name}"));
        for cut in (0..input.len() - 2).step_by(input.len() / 16 + 1) {
            assert!(
                fio::report(&input[..cut], &Thresholds::default()).is_err(),
                "{name} cut at {cut}"
            );
        }
    }
}
