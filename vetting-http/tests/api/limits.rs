//! The connection and read limits of `vetting_http::serve` (config
//! `http`): a slow body is cut (408), a slow request head and an idle
//! keep-alive connection are closed at their deadlines, slow connections
//! do not stop `/healthz`, and connections past `max_connections` are
//! refused at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads `stream` to its end, for at most `limit`: what came, or `None`
/// when it was still open then.
async fn read_to_end(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => all.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&all).into_owned())
}

/// Whether the server has closed `stream` (without waiting).
fn closed(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    loop {
        match stream.try_read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn a_slow_body_is_cut_at_its_deadline() {
    let harness = crate::harness_with(|config| {
        config.http.header_timeout_secs = 2;
        config.http.body_min_bytes_per_sec = 1000;
    })
    .await;
    let (run, token) = crate::booting_run(&harness, 1).await;
    let stream = TcpStream::connect(harness.address()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            format!(
                "POST /api/v1/runs/{run}/log HTTP/1.1\r\nHost: test\r\n\
                 Content-Type: application/json\r\nContent-Length: 100000\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // one byte every 200 ms: 5 bytes/s, far below 1000
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while writer.write_all(b" ").await.is_ok() && sent < 100_000 {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent
    });
    let answer = crate::read_head(&mut reader, Duration::from_secs(20))
        .await
        .expect("the slow body was not cut");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the connection stayed open after the 408");
    let sent = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("the sender could still write")
        .unwrap();
    assert!(sent < 100_000, "the whole body went through");
}

#[tokio::test]
async fn a_slow_head_is_closed_at_header_timeout() {
    let harness = crate::harness_with(|config| {
        config.http.header_timeout_secs = 2;
        config.http.idle_timeout_secs = 60;
    })
    .await;
    let mut stream = TcpStream::connect(harness.address()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // a header byte every 200 ms: the head is never whole
    let (mut reader, mut writer) = stream.into_split();
    let dripper = tokio::spawn(async move {
        while writer.write_all(b"X").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut all = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut all)).await;
    assert!(ended.is_ok(), "a head that never ends kept its connection");
    assert!(
        all.is_empty() || String::from_utf8_lossy(&all).starts_with("HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    dripper.abort();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let harness = crate::harness_with(|config| {
        config.http.header_timeout_secs = 60;
        config.http.idle_timeout_secs = 2;
    })
    .await;
    let mut stream = TcpStream::connect(harness.address()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    // the answer, then the close at the idle deadline (the head deadline
    // of 60 s does not count the wait between requests)
    let all = read_to_end(&mut stream, Duration::from_secs(20))
        .await
        .expect("an idle keep-alive connection stayed open");
    assert!(all.starts_with("HTTP/1.1 200"), "{all:?}");
    assert!(all.ends_with("ok\n"), "{all:?}");
    // a connection that never sends a byte idles out the same way
    let mut silent = TcpStream::connect(harness.address()).await.unwrap();
    let nothing = read_to_end(&mut silent, Duration::from_secs(20))
        .await
        .expect("a connection that sent nothing stayed open");
    assert!(nothing.is_empty(), "{nothing:?}");
}

fn enough_open_files(wanted: u64) -> bool {
    vetting_http::raise_open_file_limit().is_ok_and(|limit| limit >= wanted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_do_not_stop_healthz() {
    const SLOW: usize = 600;
    // both ends of every connection live in this process
    let wanted = 2 * SLOW as u64 + 200;
    if !vetting_testkit::prerequisite(
        (!enough_open_files(wanted))
            .then(|| format!("an open-file limit of {wanted} (raising it was refused)")),
    ) {
        return;
    }
    let harness = crate::harness_with(|config| {
        config.http.header_timeout_secs = 8;
        config.http.max_connections = 1000;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(harness.address()).await.unwrap();
        stream.write_all(b"G").await.unwrap();
        slow.push(stream);
    }
    // the next byte would come in 10 s; /healthz answers meanwhile
    let answer = reqwest::Client::new()
        .get(format!("{}/healthz", harness.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz did not answer while slow connections were open");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok\n");
    let open = slow.iter().filter(|stream| !closed(stream)).count();
    assert_eq!(
        open, SLOW,
        "slow connections were closed before /healthz was asked: the measure is void"
    );
    // and they are all closed at their head deadline (hyper's own head
    // timeout, 30 s, would be too late)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open = slow.iter().filter(|stream| !closed(stream)).count();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} slow connections still open past their head deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connections_past_max_connections_are_refused_at_once() {
    const MAX: usize = 20;
    let harness = crate::harness_with(|config| {
        config.http.max_connections = MAX;
        config.http.header_timeout_secs = 60;
        config.http.idle_timeout_secs = 60;
    })
    .await;
    // MAX keep-alive connections, each answered once (so accepted)
    let mut held = Vec::new();
    for _ in 0..MAX {
        let mut stream = TcpStream::connect(harness.address()).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let answer = crate::read_head(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        held.push(stream);
    }
    // one more: refused at once (503, closed), not left hanging
    let mut extra = TcpStream::connect(harness.address()).await.unwrap();
    let answer = read_to_end(&mut extra, Duration::from_secs(10))
        .await
        .expect("a connection past max_connections was left hanging");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer:?}"
    );
    // one closed: a new connection is served again
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(harness.address()).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_end(&mut stream, Duration::from_secs(10))
            .await
            .unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection served after one was freed: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_wait_between_keep_alive_requests_is_not_counted_as_the_heads() {
    let harness = crate::harness_with(|config| {
        config.http.header_timeout_secs = 1;
        config.http.idle_timeout_secs = 60;
    })
    .await;
    // a connection a client opens ahead and keeps unused in its pool
    let mut fresh = TcpStream::connect(harness.address()).await.unwrap();
    let mut kept = TcpStream::connect(harness.address()).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let answer = crate::read_head(&mut kept, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // a connection opened after it whose head never ends is closed at the
    // head deadline: by then the kept one has idled past it too
    let mut silent = TcpStream::connect(harness.address()).await.unwrap();
    silent.write_all(b"G").await.unwrap();
    assert!(
        read_to_end(&mut silent, Duration::from_secs(20))
            .await
            .is_some(),
        "a silent connection outlived the head deadline"
    );
    assert!(
        !closed(&kept),
        "the idle connection was closed at the head deadline"
    );
    assert!(
        !closed(&fresh),
        "the unused connection was closed at the head deadline"
    );
    for stream in [&mut kept, &mut fresh] {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let answer = crate::read_head(stream, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_its_answer_is_cut_at_idle_timeout() {
    const SIZE: u64 = 64 * 1024 * 1024;
    let harness = crate::harness_with(|config| {
        config.http.header_timeout_secs = 4;
        config.http.idle_timeout_secs = 1;
    })
    .await;
    let boot = harness.orchestrator.config().boot_dir();
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::File::create(boot.join("big.img"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(harness.address().parse().unwrap())
        .await
        .unwrap();
    stalled
        .write_all(b"GET /boot/big.img HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let answer = crate::read_head(&mut stalled, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // not reading on: the server's writes wait. A connection opened now
    // whose head never ends is closed at its head deadline (4 s), well
    // past the stalled write's (1 s)
    let mut silent = TcpStream::connect(harness.address()).await.unwrap();
    silent.write_all(b"G").await.unwrap();
    assert!(
        read_to_end(&mut silent, Duration::from_secs(20))
            .await
            .is_some()
    );
    let mut received = answer.len() as u64;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match stalled.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => received += count as u64,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection stayed open");
    assert!(
        received < SIZE,
        "the whole answer went through ({received} bytes): the stalled write was not cut"
    );
}
