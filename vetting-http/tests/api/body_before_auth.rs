//! A request without a valid token is refused (401) from its headers,
//! before its body is read: the answer comes while no byte of the body has
//! been sent, and eight 8 MiB bodies at once do not grow the server's
//! memory. The server runs in a process of its own (this test re-runs
//! itself), so other tests' memory does not count.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use vetting_probes::protocol::Endpoint;

const CHILD: &str = "VETTING_TEST_BODY_BEFORE_AUTH_CHILD";
const TEST_NAME: &str = "body_before_auth::unauthenticated_bodies_are_refused_before_they_are_read";
const BODY: usize = 8 * 1024 * 1024;
const AT_ONCE: usize = 8;

/// `VmHWM` of this process (its peak resident memory), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Resets the peak to the resident memory now (`clear_refs` 5).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn head(run: &str, endpoint: Endpoint, token: Option<&str>) -> String {
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /api/v1/runs/{run}/{endpoint} HTTP/1.1\r\nHost: test\r\n\
         Content-Type: application/json\r\nContent-Length: {BODY}\r\n{authorization}\r\n"
    )
}

#[test]
fn unauthenticated_bodies_are_refused_before_they_are_read() {
    if std::env::var_os(CHILD).is_some() {
        return in_own_process();
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the test in its own process failed:\n{stdout}\n{stderr}"
    );
}

fn in_own_process() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let harness = crate::harness().await;
        let (run, token) = crate::booting_run(&harness, 1).await;
        let forged = format!("{}x", &token[..token.len() - 1]);
        let body = std::sync::Arc::new(vec![b' '; BODY]);
        for endpoint in crate::served_endpoints() {
            // the answer comes from the head alone: no byte of the body sent
            for token in [None, Some(forged.as_str())] {
                let mut stream = tokio::net::TcpStream::connect(harness.address())
                    .await
                    .unwrap();
                stream
                    .write_all(head(&run, endpoint, token).as_bytes())
                    .await
                    .unwrap();
                let answer = crate::read_head(&mut stream, Duration::from_secs(10)).await;
                let answer = answer.unwrap_or_else(|| {
                    panic!("{endpoint}: no answer before the body was sent (token {token:?})")
                });
                assert!(
                    answer.starts_with("HTTP/1.1 401"),
                    "{endpoint}: {answer:?} (token {token:?})"
                );
            }

            // eight whole bodies at once do not grow the server's memory
            reset_peak_rss();
            let before = peak_rss();
            let mut clients = Vec::new();
            for _ in 0..AT_ONCE {
                let head = head(&run, endpoint, None);
                let body = body.clone();
                let address = harness.address();
                clients.push(tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
                    let (mut reader, mut writer) = stream.into_split();
                    let sender = tokio::spawn(async move {
                        // the server may close before taking it all
                        let _ = writer.write_all(head.as_bytes()).await;
                        let _ = writer.write_all(&body).await;
                        writer
                    });
                    let answer = crate::read_head(&mut reader, Duration::from_secs(20)).await;
                    sender.abort();
                    answer
                }));
            }
            for client in clients {
                let answer = client.await.unwrap();
                let answer = answer.unwrap_or_else(|| panic!("{endpoint}: no answer"));
                assert!(answer.starts_with("HTTP/1.1 401"), "{endpoint}: {answer:?}");
            }
            let grown = peak_rss().saturating_sub(before);
            eprintln!("{endpoint}: peak RSS grew {} KiB", grown / 1024);
            assert!(
                grown < 16 * 1024 * 1024,
                "{endpoint}: {AT_ONCE} unauthenticated {BODY}-byte bodies grew the peak RSS by {grown} bytes"
            );
        }
    });
}
