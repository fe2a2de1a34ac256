//! Issue 13: the guard's servers without the guard: the query socket (`top --live`) and
//! `/metrics`, each on a tokio runtime of its own in a thread, fed a hand-made snapshot.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctguard::flow::{Flow, L4, Proto, ProtoState, TcpState, Tuple};
use ctguard::guard::metrics::{Action, Metrics};
use ctguard::guard::query::{self, BindError, QueryError};
use ctguard::guard::{Board, Seen, http};
use ctguard::guests::GuestMap;
use ctguard::output::report::Ranking;
use ctguard::stats::{CpuStats, Fill, TableStats};
use ctguard::tally::{GroupBy, Tally, column_of};

/// A server running on its own current-thread runtime; stopped (and joined) when dropped.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start<F, Fut>(serve: F) -> Running
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<()>>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(serve(stopped))
        });
        Running { stop: Some(stop), thread: Some(thread) }
    }

    fn stop(mut self) -> std::io::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn query_server(socket: query::QuerySocket, board: Arc<Board>) -> Running {
    Running::start(move |stopped| async move {
        query::serve(socket, board, async {
            let _ = stopped.await;
        })
        .await
    })
}

fn flow(src: &str, state: Option<TcpState>, proto: Proto) -> Flow {
    let orig = Tuple {
        src: src.parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        l4: L4::Ports { src: 1000, dst: 80 },
        zone: None,
    };
    Flow { state: state.map(ProtoState::Tcp), ..Flow::new(proto, orig) }
}

/// The flows of a small table, the guests owning them, and the snapshot a guard would publish
/// of them (its rows from a tally by guest, as the daemon keeps them).
fn table() -> (Vec<Flow>, GuestMap, Seen) {
    let mut guests = GuestMap::new();
    guests.add("web01", vec!["172.16.3.0/24".parse().unwrap()]);
    guests.add("db \"main\"", vec!["172.16.4.0/24".parse().unwrap()]);
    guests.add("idle", vec!["172.16.5.0/24".parse().unwrap()]);
    let mut flows = Vec::new();
    for i in 0..40 {
        flows.push(flow(&format!("172.16.3.{}", i % 200), Some(TcpState::Established), Proto::TCP));
    }
    for _ in 0..7 {
        flows.push(flow("172.16.3.9", Some(TcpState::TimeWait), Proto::TCP));
        flows.push(flow("172.16.4.2", Some(TcpState::SynSent), Proto::TCP));
    }
    for _ in 0..5 {
        flows.push(flow("172.16.4.3", None, Proto::UDP));
        flows.push(flow("10.9.9.9", Some(TcpState::Established), Proto::TCP));
    }
    let mut by_guest = Tally::new(GroupBy::Guest, guests.clone());
    let mut rows: std::collections::BTreeMap<Option<u32>, ctguard::tally::Row> = Default::default();
    for f in &flows {
        by_guest.add(f);
        let r = rows.entry(guests.owner(f)).or_default();
        r.total += 1;
        r.by_state[column_of(f)] += 1;
    }
    let seen = Seen {
        guests: vec!["web01".into(), "db \"main\"".into(), "idle".into()],
        rows: rows.into_iter().collect(),
        stats: Some(TableStats { count: flows.len() as u32, max: 262_144 }),
        kernel: Some(CpuStats { drop: 3, ..CpuStats::default() }),
        events: 10,
        overruns: 0,
        resyncs: 1,
        synced: true,
        at_unix_ms: 1_764_670_000_000,
    };
    (flows, guests, seen)
}

fn socket_in(dir: &Path) -> PathBuf {
    dir.join("guard.sock")
}

#[test]
fn issue_13_query_round_trip_and_the_socket_is_0600_and_removed_at_the_end() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(dir.path());
    let board = Arc::new(Board::default());
    let server = query_server(query::bind(&path).unwrap(), Arc::clone(&board));
    let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Before the first snapshot: the guard says so, not a table of zeros.
    match query::ask(&path, Duration::from_secs(2)) {
        Err(QueryError::Refused { reason, .. }) => assert!(reason.contains("seeding"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let (_, _, seen) = table();
    board.publish(seen.clone());
    let a = query::ask(&path, Duration::from_secs(2)).unwrap();
    assert_eq!((a.guests.clone(), a.rows.clone()), (seen.guests.clone(), seen.rows.clone()));
    let t = a.table.unwrap();
    assert_eq!((t.count, t.max, a.synced, a.at_unix_ms), (64, 262_144, true, seen.at_unix_ms));
    // A request the guard does not know gets an error line, and the socket keeps serving.
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"{\"version\":1,\"query\":\"counts\",\"flows\":true}\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("{\"version\":1,\"error\":\"bad request: unknown field"), "{reply}");
    assert!(query::ask(&path, Duration::from_secs(2)).is_ok());
    server.stop().unwrap();
    assert!(!path.exists(), "the socket file is removed on a clean stop");
    // A stale socket of ours (no one answering) is replaced at the next start.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let again = query::bind(&path).unwrap();
    // While a guard answers on it, a second one refuses to take it over.
    let server = query_server(again, board);
    assert!(matches!(query::bind(&path), Err(BindError::InUse { .. })));
    server.stop().unwrap();
}

#[test]
fn issue_13_a_planted_symlink_or_file_at_the_socket_path_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(dir.path());
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let e = query::bind(&path).unwrap_err();
    assert!(matches!(e, BindError::InTheWay { kind: "symlink", .. }), "{e}");
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "a file").unwrap();
    let e = query::bind(&path).unwrap_err();
    assert!(matches!(e, BindError::InTheWay { kind: "regular file", .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a file");
    // A directory others may write to is no place for root's socket.
    use std::os::unix::fs::PermissionsExt;
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = query::bind(&socket_in(&open)).unwrap_err();
    assert!(matches!(e, BindError::Untrusted { .. }), "{e}");
    assert!(matches!(
        query::bind(&dir.path().join("missing/guard.sock")),
        Err(BindError::Untrusted { .. })
    ));
}

#[test]
fn issue_13_a_silent_client_is_cut_off_and_does_not_hold_up_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(dir.path());
    let board = Arc::new(Board::default());
    board.publish(table().2);
    let server = query_server(query::bind(&path).unwrap(), board);
    let mut silent = UnixStream::connect(&path).unwrap();
    let start = Instant::now();
    // The next client is answered at once, while the silent one still waits.
    query::ask(&path, Duration::from_millis(500)).unwrap();
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
    // The silent one is closed after the server's timeout, without an answer.
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    silent.read_to_end(&mut got).unwrap();
    let waited = start.elapsed();
    assert!(
        got.is_empty() && waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?} {got:?}"
    );
    // An oversize request line is refused with a reason.
    let mut big = UnixStream::connect(&path).unwrap();
    let line = vec![b' '; query::MAX_REQUEST + 100];
    let _ = big.write_all(&line);
    let mut reply = String::new();
    big.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = big.read_to_string(&mut reply);
    assert!(reply.contains("request longer than 4096 bytes"), "{reply}");
    server.stop().unwrap();
}

#[test]
fn issue_13_ask_times_out_on_a_server_that_never_answers_and_says_no_guard_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(dir.path());
    // Listening, never accepting: the connection sits in the backlog, no answer comes.
    let _mute = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let start = Instant::now();
    let e = query::ask(&path, Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, QueryError::Timeout { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let e = query::ask(&dir.path().join("none.sock"), Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, QueryError::NoGuard { .. }), "{e}");
}

fn ctguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ctguard"))
        .args(args)
        .env_remove("CTGUARD_GUESTS")
        .env_remove("CTGUARD_SOCKET")
        .output()
        .unwrap()
}

#[test]
fn issue_13_top_live_prints_the_bytes_top_by_guest_prints_for_the_same_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(dir.path());
    let (flows, guests, seen) = table();
    let board = Arc::new(Board::default());
    board.publish(seen.clone());
    let server = query_server(query::bind(&path).unwrap(), board);
    let sock = path.to_str().unwrap();
    // What `top --by guest` prints for these flows: the dump's tally, the same fill.
    let fill = Fill::new(seen.stats.unwrap(), ctguard::sysctl::read("nf_conntrack_buckets"));
    let tally = |by: GroupBy, keep: &dyn Fn(&Flow) -> bool| {
        let mut t = Tally::new(by, guests.clone());
        flows.iter().filter(|f| keep(f)).for_each(|f| t.add(f));
        t
    };
    let all = tally(GroupBy::Guest, &|_| true);
    let expect =
        |t: &Tally, table: Option<Fill>, limit: Option<usize>, json: bool, states: bool| {
            let r = Ranking::new(t, table, limit);
            let mut out = Vec::new();
            if json {
                r.write_json(&mut out).unwrap()
            } else {
                r.write_text(&mut out, states).unwrap()
            }
            String::from_utf8(out).unwrap()
        };
    let run = |args: &[&str]| {
        let out = ctguard(&[args, &["--live", "--socket", sock]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["top"]);
    assert_eq!(text, expect(&all, Some(fill.clone()), Some(10), false, true));
    assert!(text.contains("db \"main\"") && text.contains("(no guest)"), "{text}");
    assert_eq!(
        run(&["top", "--by", "guest", "--json"]),
        expect(&all, Some(fill.clone()), Some(10), true, true)
    );
    assert_eq!(run(&["top", "-n", "1"]), expect(&all, Some(fill.clone()), Some(1), false, true));
    // count: the same printing as without --live.
    assert_eq!(run(&["count", "--by", "guest"]), expect(&all, None, None, false, false));
    assert_eq!(run(&["count", "--by", "guest", "--json"]), expect(&all, None, None, true, false));
    assert_eq!(run(&["count"]), "64\n");
    assert_eq!(run(&["count", "--json"]), "{\"matched\":64}\n");
    // Filters the guard can answer: a guest by name, TCP states.
    let web = guests.find("web01").unwrap();
    let only_web = tally(GroupBy::Guest, &|f| guests.owner(f) == Some(web));
    assert_eq!(
        run(&["top", "--guest", "web01"]),
        expect(&only_web, Some(fill.clone()), Some(10), false, true)
    );
    let est = |f: &Flow| f.state == Some(ProtoState::Tcp(TcpState::Established));
    assert_eq!(
        run(&["count", "--by", "guest", "--state", "ESTABLISHED"]),
        expect(&tally(GroupBy::Guest, &est), None, None, false, false)
    );
    // By state: TCP states as a dump names them (every flow here is TCP or UDP, and the UDP
    // ones are the guard's NON_TCP).
    let by_state = run(&["count", "--by", "state", "--state", "ESTABLISHED,TIME_WAIT,SYN_SENT"]);
    let tcp = |f: &Flow| f.proto == Proto::TCP;
    assert_eq!(by_state, expect(&tally(GroupBy::State, &tcp), None, None, false, false));
    assert!(run(&["count", "--by", "state"]).contains(" NON_TCP "));
    // A guest the guard does not know: one line, exit 2.
    let out = ctguard(&["top", "--live", "--socket", sock, "--guest", "nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("ctguard: --guest 'nobody' is not a guest of the guard on {sock}\n")
    );
    server.stop().unwrap();
}

#[test]
fn issue_13_live_without_a_guard_or_with_what_it_cannot_answer_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_in(dir.path());
    let sock = sock.to_str().unwrap();
    let line = crate::cli::refused(&["top", "--live", "--socket", sock]);
    assert_eq!(line, format!("ctguard: no guard answers on {sock}: is `ctguard guard` running?"));
    for (args, says) in [
        (&["top", "--live", "--by", "src"][..], "--by src with --live"),
        (&["count", "--live", "-s", "10.0.0.0/8"], "-s 10.0.0.0/8 with --live"),
        (&["top", "--live", "--dport", "80"], "--dport 80 with --live"),
        (&["top", "--live", "--guest", "10.0.0.0/8"], "--guest 10.0.0.0/8 with --live"),
        (&["top", "--live", "--state", "COOKIE_WAIT"], "--state COOKIE_WAIT with --live"),
        (&["--netns", "x", "top", "--live"], "--netns with --live"),
    ] {
        let line = crate::cli::refused(&[args, &["--socket", sock]].concat());
        assert!(line.contains(says), "{args:?}: {line}");
    }
}

fn http_server(metrics: Arc<Metrics>) -> (Running, std::net::SocketAddr) {
    let listener = http::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let running = Running::start(move |stopped| async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        http::serve(listener, metrics, async {
            let _ = stopped.await;
        })
        .await
    });
    (running, addr)
}

/// One HTTP/1.1 request, `Connection: close`: status line, headers, body.
fn get(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn scraped_metrics() -> Arc<Metrics> {
    let board = Arc::new(Board::default());
    board.publish(table().2);
    let m = Arc::new(Metrics::new(board, env!("CARGO_PKG_VERSION")));
    m.acted("web01", Action::Cap);
    m.evicted("web01", 12);
    m.capped("web01", true);
    m.quota("web01", 100);
    m
}

#[test]
fn issue_13_metrics_over_http_openmetrics_or_text_404_and_a_slow_client_blocks_no_one() {
    let metrics = scraped_metrics();
    let (server, addr) = http_server(Arc::clone(&metrics));
    // A slow-loris: connects, sends half a request line, then nothing; another sends nothing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /met").unwrap();
    let mut mute = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    let prom =
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, head, body) = get(addr, "/metrics", Some(prom));
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    let mut want = String::new();
    metrics.encode(&mut want).unwrap();
    assert_eq!(body, want);
    assert!(
        body.contains("ctguard_entries{guest=\"db \\\"main\\\"\",state=\"SYN_SENT\"} 7\n"),
        "{body}"
    );
    assert!(body.contains("ctguard_kernel_drop_total 3\n") && body.ends_with("# EOF\n"));
    // No Accept (curl): the Prometheus text format.
    let (status, head, body) = get(addr, "/metrics", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    assert!(body.contains("# TYPE ctguard_kernel_drop_total counter\n") && !body.contains("# EOF"));
    let (status, _, _) = get(addr, "/", None);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // A request with a body is refused unread.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    let mut all = String::new();
    let _ = s.read_to_string(&mut all);
    assert!(all.starts_with("HTTP/1.1 413 "), "{all}");
    // Both are closed by the server once the header timeout passes.
    for client in [&mut slow, &mut mute] {
        client.set_read_timeout(Some(http::HEADER_TIMEOUT + Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("closed by the server, not timed out here");
    }
    assert!(
        start.elapsed() < http::HEADER_TIMEOUT + Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    server.stop().unwrap();
}

#[test]
fn issue_13_promtool_accepts_the_exposition() {
    let Ok(which) = Command::new("sh").args(["-c", "command -v promtool"]).output() else {
        panic!("sh")
    };
    if !which.status.success() {
        assert!(
            std::env::var_os("CTGUARD_REQUIRE_TOOLS").is_none(),
            "promtool is missing (Debian package prometheus) and CTGUARD_REQUIRE_TOOLS is set"
        );
        eprintln!("promtool not installed: exposition not linted (scripts/test installs it)");
        return;
    }
    let metrics = scraped_metrics();
    let mut text = String::new();
    metrics.encode_prometheus(&mut text).unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
