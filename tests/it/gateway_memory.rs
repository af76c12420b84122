//! The gateway's memory against clients that open many connections and send
//! half a request head: the real binary runs as a child process and its RSS
//! is read from /proc while the connections are held open.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `mp-auth gateway` as a child process on a free port.
struct ChildGateway {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl ChildGateway {
    async fn start(extra_env: &[(&str, &str)]) -> ChildGateway {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mp-auth"));
        cmd.env_clear()
            .env("MP_AUTH_GATEWAY__RATE_LIMIT_PER_SEC", "0")
            .env("MP_AUTH_GATEWAY__HEADER_READ_TIMEOUT_MS", "30000")
            .args(["gateway", "--listen", &addr.to_string()])
            .args(["--backend", "http://127.0.0.1:9"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn mp-auth gateway");
        let started = Instant::now();
        loop {
            // A complete request answered and closed by the server, so the probe's
            // connection no longer holds one of the gateway's connection slots.
            if let Ok(mut s) = TcpStream::connect(addr).await {
                let _ = s
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await;
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer).await;
                if answer.starts_with(b"HTTP/1.1 200") {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "gateway did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ChildGateway { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// Opens a connection and sends `bytes` of a never-finished header line.
async fn half_head(addr: std::net::SocketAddr, bytes: usize) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /auth/mp_login HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(bytes)
    );
    // The gateway may answer 431 and close before everything is written.
    let _ = s.write_all(head.as_bytes()).await;
    Some(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn many_half_sent_heads_stay_within_a_memory_bound() {
    let gw = ChildGateway::start(&[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = gw.rss_kib();
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Some(s) = half_head(gw.addr, 200 * 1024).await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = gw.rss_kib();
    let growth_mib = after.saturating_sub(before) / 1024;
    // Unbounded, hyper buffers up to ~400 KB per connection: ~60 MiB here.
    assert!(
        growth_mib < 24,
        "RSS grew by {growth_mib} MiB ({before} -> {after} KiB) for 300 half-sent heads"
    );
    // An oversized head is answered 431, not buffered.
    let mut s = half_head(gw.addr, 64 * 1024).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
        .await
        .unwrap()
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let gw = ChildGateway::start(&[("MP_AUTH_GATEWAY__MAX_CONNECTIONS", "20")]).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_head(gw.addr, 10).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the extra connection is closed, not parked")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // Slots come back when connections end.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_on_the_probe_listener_answer_while_the_public_port_is_full() {
    let probe_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let probe_addr = format!("127.0.0.1:{probe_port}");
    let gw = ChildGateway::start(&[
        ("MP_AUTH_GATEWAY__MAX_CONNECTIONS", "10"),
        ("MP_AUTH_GATEWAY__PROBE_LISTEN", &probe_addr),
    ])
    .await;
    // A flood holds every public slot with half-sent heads.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(half_head(gw.addr, 10).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(&probe_addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The probe port serves probes only.
    let mut s = TcpStream::connect(&probe_addr).await.unwrap();
    s.write_all(b"POST /auth/mp_login HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    drop(held);
}
