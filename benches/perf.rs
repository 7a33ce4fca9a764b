//! Performance benchmark: throughput, pacing, memory, a real Synapse, start-up,
//! `find` over 100,000 deactivated users, and the cost of sealing passwords
//! (`--encrypt-to`) on the mock and on the real Synapse.
//!
//! Run with `scripts/bench.sh` (which also starts a Synapse with
//! `bcrypt_rounds: 12` for the real-server figures), or `cargo bench --bench perf`
//! for the mock-server figures alone. Prints a Markdown table of medians.
//!
//! The tool runs as a real process (the release binary) against a small hyper
//! server in this process that answers at once; CPU time and peak RSS come from
//! the kernel (`wait4`).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

const BUILT: &str = env!("CARGO_BIN_EXE_matrix-reactivate");

/// The binary measured: this build, or `BENCH_BIN` (another build of the
/// tool, to compare two versions in one session on the same machine).
fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| BUILT.to_owned())
}
const TOKEN: &str = "syt_bench_token";

// ---------------------------------------------------------------- mock server

#[derive(Default)]
struct Mock {
    requests: AtomicU64,
    gets: AtomicU64,
    puts: AtomicU64,
    /// When each PUT arrived, for the pacing figures.
    put_times: Mutex<Vec<Instant>>,
}

impl Mock {
    fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.gets.store(0, Ordering::SeqCst);
        self.puts.store(0, Ordering::SeqCst);
        self.put_times.lock().unwrap().clear();
    }
}

async fn answer(
    mock: Arc<Mock>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    mock.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    // Drain the body so the connection can be reused.
    let _ = req.into_body().collect().await;
    if path.ends_with("/auth_metadata") {
        // A server that owns its logins: no delegated authentication.
        return Ok(Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
            )))
            .expect("a valid response"));
    }
    if let Some(body) = find_answer(&path, &query) {
        mock.gets.fetch_add(1, Ordering::Relaxed);
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response"));
    }
    let body: &'static [u8] = if method == Method::PUT {
        mock.puts.fetch_add(1, Ordering::Relaxed);
        mock.put_times.lock().unwrap().push(Instant::now());
        b"{}"
    } else if path == "/_synapse/admin/v1/server_version" {
        br#"{"server_version":"1.163.2"}"#
    } else if path == "/_matrix/client/v3/account/whoami" {
        br#"{"user_id":"@admin:example.org"}"#
    } else if path.ends_with("/admin") {
        // The admin flag, which versions before the MAS support asked for.
        br#"{"admin":true}"#
    } else {
        mock.gets.fetch_add(1, Ordering::Relaxed);
        br#"{"name":"@u:example.org","deactivated":true,"erased":false,"locked":false,"admin":false}"#
    };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .expect("a valid response"))
}

// ---------------------------------------------------------------- find's server

/// Deactivated users the mock lists for `find` (`FIND_USERS` sets it).
fn find_users() -> u64 {
    std::env::var("FIND_USERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// Rooms of 100 users each, and ten big rooms every user was in.
const TEAM_SIZE: u64 = 100;
const BIG_ROOMS: u64 = 10;
const FIND_T0: u64 = 1_795_654_800_000;

/// The answers `find` needs: the v3 list in pages, each user's memberships
/// (two rooms left), each room's member state (one own leave per member).
fn find_answer(path: &str, query: &str) -> Option<String> {
    let n = find_users();
    if path == "/_synapse/admin/v3/users" {
        let param = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (from, limit) = (param("from").unwrap_or(0), param("limit").unwrap_or(100));
        let end = (from + limit).min(n);
        let users: Vec<String> = (from..end)
            .map(|i| format!(r#"{{"name":"@find{i:07}:example.org","deactivated":true,"erased":false,"locked":false,"is_guest":false,"admin":false}}"#))
            .collect();
        let next = if end < n {
            format!(r#","next_token":"{end}""#)
        } else {
            String::new()
        };
        return Some(format!(
            r#"{{"users":[{}],"total":{n}{next}}}"#,
            users.join(",")
        ));
    }
    let rest = path.strip_prefix("/_synapse/admin/v1/")?;
    if let Some(user) = rest
        .strip_prefix("users/")
        .and_then(|r| r.strip_suffix("/memberships"))
    {
        let Some(i) = user
            .strip_prefix("%40find")
            .and_then(|u| u.strip_suffix("%3Aexample.org"))
        else {
            return Some(r#"{"memberships":{}}"#.into());
        };
        let i: u64 = i.parse().ok()?;
        return Some(format!(
            r#"{{"memberships":{{"!team{}:example.org":"leave","!big{}:example.org":"leave","!now{}:example.org":"join"}}}}"#,
            i / TEAM_SIZE,
            i % BIG_ROOMS,
            i % BIG_ROOMS
        ));
    }
    let room = rest
        .strip_prefix("rooms/%21")?
        .strip_suffix("%3Aexample.org/state")?;
    let members: Vec<u64> = if let Some(k) = room.strip_prefix("team") {
        let k: u64 = k.parse().ok()?;
        (k * TEAM_SIZE..((k + 1) * TEAM_SIZE).min(n)).collect()
    } else {
        let k: u64 = room.strip_prefix("big")?.parse().ok()?;
        (k..n).step_by(BIG_ROOMS as usize).collect()
    };
    let events: Vec<String> = members
        .iter()
        .map(|i| {
            let id = format!("@find{i:07}:example.org");
            format!(
                r#"{{"type":"m.room.member","state_key":"{id}","sender":"{id}","origin_server_ts":{},"content":{{"membership":"leave"}},"event_id":"$e{i}","room_id":"!{room}:example.org"}}"#,
                FIND_T0 + i
            )
        })
        .collect();
    Some(format!(r#"{{"state":[{}]}}"#, events.join(",")))
}

/// Starts the mock on its own thread and single-threaded runtime.
fn start_mock() -> (SocketAddr, Arc<Mock>) {
    let mock = Arc::new(Mock::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    let m = mock.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let m = m.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(m.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    (addr, mock)
}

// ---------------------------------------------------------------- running the tool

struct Run {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
    code: i32,
}

/// Runs the tool to completion (or until `stop_after`, then SIGINT) and
/// measures it with `wait4`.
fn run_tool(
    dir: &Path,
    url: &str,
    args: &[&str],
    token: &str,
    stop_after: Option<Duration>,
) -> Run {
    let _ = std::fs::remove_file(dir.join("out.csv"));
    let _ = std::fs::remove_file(dir.join("out.csv.journal"));
    let mut all = vec![
        "-H",
        url,
        "in.csv",
        "-o",
        "out.csv",
        "--quiet",
        "--no-progress",
    ];
    all.extend_from_slice(args);
    run_measured(dir, &all, token, stop_after)
}

/// Runs the tool with exactly `args` and measures it with `wait4`.
fn run_measured(dir: &Path, args: &[&str], token: &str, stop_after: Option<Duration>) -> Run {
    let started = Instant::now();
    // BENCH_WRAP="perf record -g -o /tmp/perf.data --" runs the tool under a profiler.
    let wrap: Vec<String> = std::env::var("BENCH_WRAP")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let child = cmd
        .current_dir(dir)
        .env("MATRIX_ADMIN_TOKEN", token)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("the tool starts");
    let pid = child.id() as libc::pid_t;
    if let Some(d) = stop_after {
        std::thread::sleep(d);
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let wall = started.elapsed();
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    std::mem::forget(child);
    Run {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
    }
}

fn write_input(dir: &Path, n: usize, server: &str, prefix: &str) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("in.csv")).expect("input"));
    writeln!(f, "user_id").unwrap();
    for i in 0..n {
        writeln!(f, "@{prefix}{i:07}:{server}").unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, what: &str, target: &str, got: String, ok: bool) {
        let verdict = if ok { "met" } else { "NOT met" };
        println!("| {what} | {target} | {got} | {verdict} |");
        self.0
            .push([what.into(), target.into(), got, verdict.into()]);
    }
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("matrix-reactivate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------- the figures

fn throughput(t: &mut Table, url: &str, mock: &Mock, dir: &Path, rounds: usize) {
    let n = 100_000;
    write_input(dir, n, "example.org", "user");
    let mut rates = vec![];
    let mut cpus = vec![];
    let mut rss = vec![];
    for _ in 0..rounds {
        mock.reset();
        let r = run_tool(
            dir,
            url,
            &["--rate", "0", "--concurrency", "64"],
            TOKEN,
            None,
        );
        assert_eq!(r.code, 0, "throughput run failed");
        assert_eq!(mock.puts.load(Ordering::SeqCst), n as u64);
        rates.push(n as f64 / r.wall.as_secs_f64());
        cpus.push(r.cpu.as_secs_f64() * 1e6 / n as f64);
        rss.push(r.max_rss_kib as f64 / 1024.0);
        eprintln!(
            "  throughput: {:.0} users/s, {:.1} µs CPU/user, {:.1} MB",
            rates.last().unwrap(),
            cpus.last().unwrap(),
            rss.last().unwrap()
        );
    }
    let rate = median(rates.clone());
    t.row(
        "1. 100,000 users, --rate 0 --concurrency 64, journal on",
        "≥ 5,000 users/s",
        format!(
            "{rate:.0} users/s (runs: {}); tool CPU {:.1} µs/user",
            fmt_list(&rates, 0),
            median(cpus)
        ),
        rate >= 5000.0,
    );
    t.row(
        "3. peak RSS, 100,000 rows, real run",
        "same order as 1M",
        format!("{:.1} MB", median(rss)),
        true,
    );
}

fn fmt_list(v: &[f64], prec: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pacing(t: &mut Table, url: &str, mock: &Mock, dir: &Path, rounds: usize) {
    // 1,001 users at 50/s: the first PUT at 0 s, the last at 20 s.
    write_input(dir, 1001, "example.org", "pace");
    let (mut rates, mut windows) = (vec![], vec![]);
    for _ in 0..rounds {
        mock.reset();
        let r = run_tool(
            dir,
            url,
            &["--rate", "50", "--burst", "1", "--concurrency", "8"],
            TOKEN,
            None,
        );
        assert_eq!(r.code, 0);
        let times = mock.put_times.lock().unwrap().clone();
        let span = (times[times.len() - 1] - times[0]).as_secs_f64();
        rates.push((times.len() - 1) as f64 / span);
        let mut max_window = 0;
        for i in 0..times.len() {
            let c = times[i..]
                .iter()
                .take_while(|&&x| x - times[i] < Duration::from_secs(1))
                .count();
            max_window = max_window.max(c);
        }
        windows.push(max_window as f64);
        eprintln!(
            "  pacing 50/s: {:.3}/s over {span:.2} s, max {max_window} in 1 s",
            rates.last().unwrap()
        );
    }
    let rate = median(rates.clone());
    let worst = windows.iter().cloned().fold(0.0, f64::max);
    t.row(
        "2. --rate 50 --burst 1, 20 s",
        "[0.98, 1.005] × 50/s, no 1 s window > 51",
        format!(
            "{rate:.3}/s (runs: {}); busiest 1 s window: {worst:.0} PUTs",
            fmt_list(&rates, 3)
        ),
        (0.98 * 50.0..=1.005 * 50.0).contains(&rate) && worst <= 51.0,
    );

    write_input(dir, 100, "example.org", "slow");
    let mut counts = vec![];
    for _ in 0..rounds.min(2) {
        mock.reset();
        let r = run_tool(
            dir,
            url,
            &["--rate", "0.5"],
            TOKEN,
            Some(Duration::from_secs(21)),
        );
        assert_eq!(r.code, 130);
        let times = mock.put_times.lock().unwrap().clone();
        let c = times
            .iter()
            .filter(|&&x| x - times[0] < Duration::from_secs(20))
            .count();
        counts.push(c as f64);
        eprintln!("  pacing 0.5/s: {c} PUTs in 20 s");
    }
    t.row(
        "2. --rate 0.5, 20 s",
        "10 ± 1 PUTs",
        format!(
            "{} PUTs (runs: {})",
            median(counts.clone()),
            fmt_list(&counts, 0)
        ),
        counts.iter().all(|c| (9.0..=11.0).contains(c)),
    );
}

fn memory(t: &mut Table, url: &str, mock: &Mock, dir: &Path) {
    let n = 1_000_000;
    write_input(dir, n, "example.org", "mem");
    for (label, args) in [
        (
            "dry run",
            &["--dry-run", "--rate", "0", "--concurrency", "64"][..],
        ),
        ("real run", &["--rate", "0", "--concurrency", "64"][..]),
    ] {
        mock.reset();
        let r = run_tool(dir, url, args, TOKEN, None);
        assert_eq!(r.code, 0);
        let mb = r.max_rss_kib as f64 / 1024.0;
        eprintln!(
            "  memory 1M {label}: {mb:.1} MB in {:.1} s",
            r.wall.as_secs_f64()
        );
        t.row(
            &format!("3. peak RSS, 1,000,000 rows, {label}"),
            "< 50 MB",
            format!(
                "{mb:.1} MB ({:.0} users/s)",
                n as f64 / r.wall.as_secs_f64()
            ),
            mb < 50.0,
        );
    }
}

fn startup(t: &mut Table, url: &str, mock: &Mock, dir: &Path) {
    let mut times = vec![];
    for _ in 0..30 {
        let s = Instant::now();
        let out = Command::new(bin())
            .arg("--help")
            .output()
            .expect("--help runs");
        assert!(out.status.success());
        times.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    let m = median(times);
    t.row(
        "5. `--help`",
        "< 20 ms",
        format!("{m:.1} ms (median of 30)"),
        m < 20.0,
    );

    std::fs::write(dir.join("in.csv"), "user_id\n").unwrap();
    mock.reset();
    let r = run_tool(dir, url, &[], TOKEN, None);
    assert_eq!(r.code, 0);
    let n = mock.requests.load(Ordering::SeqCst);
    t.row(
        "5. preflight",
        "≤ 5 requests (version, whoami, admin, auth_metadata stable + unstable)",
        format!("{n} requests"),
        n <= 5,
    );
}

fn find(t: &mut Table, url: &str, mock: &Mock, dir: &Path, rounds: usize) {
    let n = find_users();
    let rooms = n.div_ceil(TEAM_SIZE) + BIG_ROOMS;
    let (mut rates, mut rss, mut cpus) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        mock.reset();
        let out = dir.join("found.csv");
        let _ = std::fs::remove_file(&out);
        let args = [
            "find",
            "-H",
            url,
            "-o",
            "found.csv",
            "--quiet",
            "--no-progress",
            "--rate",
            "0",
            "--concurrency",
            "16",
            "--page-size",
            "1000",
        ];
        let r = run_measured(dir, &args, TOKEN, None);
        assert_eq!(r.code, 0, "the find run failed");
        let text = std::fs::read_to_string(&out).expect("find's output");
        assert_eq!(text.lines().count() as u64, n + 1, "one row per user");
        let requests = mock.gets.load(Ordering::SeqCst);
        // The pages, one memberships request per user, one state per room,
        // and the preflight's admin read and memberships probe.
        assert_eq!(
            requests,
            n.div_ceil(1000) + n + rooms + 2,
            "each room read once"
        );
        rates.push(n as f64 / r.wall.as_secs_f64());
        cpus.push(r.cpu.as_secs_f64() * 1e6 / n as f64);
        rss.push(r.max_rss_kib as f64 / 1024.0);
        eprintln!(
            "  find: {:.0} users/s, {:.1} µs CPU/user, {:.1} MB, {requests} GETs",
            rates.last().unwrap(),
            cpus.last().unwrap(),
            rss.last().unwrap()
        );
    }
    let rate = median(rates.clone());
    let mb = median(rss.clone());
    t.row(
        &format!(
            "6. find, {n} deactivated users in {rooms} rooms (2 left each), --rate 0 --concurrency 16 --page-size 1000"
        ),
        "≥ 5,000 users/s; peak RSS < 50 MB",
        format!(
            "{rate:.0} users/s (runs: {}); tool CPU {:.1} µs/user; peak RSS {mb:.1} MB (runs: {})",
            fmt_list(&rates, 0),
            median(cpus),
            fmt_list(&rss, 1)
        ),
        rate >= 5000.0 && mb < 50.0,
    );
}

// ---------------------------------------------------------------- sealing

/// Which run of a pair goes first: unsealed in even rounds, sealed in odd
/// ones, so that neither always has the server's or the cache's first go.
fn pair_order(round: usize) -> [bool; 2] {
    if round % 2 == 0 {
        [false, true]
    } else {
        [true, false]
    }
}

/// A fresh age X25519 recipient to seal to.
fn recipient() -> String {
    age::x25519::Identity::generate().to_public().to_string()
}

/// Sealing alone, in this process on one thread: CPU per password.
fn seal_alone(recipient: &str) -> Duration {
    use matrix_reactivate::seal::{Recipient, Sealer};
    let sealer = Sealer::new(vec![Recipient::parse(recipient).expect("a recipient")])
        .expect("one recipient");
    let n = 20_000;
    for _ in 0..1_000 {
        std::hint::black_box(sealer.seal("q8ZkE1mP0aR7nX2cV5bT9wYd").expect("sealed"));
    }
    let cpu = thread_cpu();
    for _ in 0..n {
        std::hint::black_box(sealer.seal("q8ZkE1mP0aR7nX2cV5bT9wYd").expect("sealed"));
    }
    (thread_cpu() - cpu) / n
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 100,000 users on the instant mock, unsealed and sealed in turn (one pair
/// per round, so both see the same machine), and sealing alone.
fn seal_mock(t: &mut Table, url: &str, mock: &Mock, dir: &Path, rounds: usize) {
    let n = 100_000;
    write_input(dir, n, "example.org", "seal");
    let to = recipient();
    let alone = seal_alone(&to);
    eprintln!(
        "  sealing alone: {:.1} µs CPU per password",
        alone.as_secs_f64() * 1e6
    );
    let (mut rates, mut cpus) = ([vec![], vec![]], [vec![], vec![]]);
    for round in 0..rounds {
        for sealed in pair_order(round) {
            let i = usize::from(sealed);
            mock.reset();
            let mut args = vec!["--rate", "0", "--concurrency", "64"];
            if sealed {
                args.extend(["--encrypt-to", to.as_str()]);
            }
            let r = run_tool(dir, url, &args, TOKEN, None);
            assert_eq!(r.code, 0, "the sealed-vs-unsealed run failed");
            assert_eq!(mock.puts.load(Ordering::SeqCst), n as u64);
            let text = std::fs::read_to_string(dir.join("out.csv")).expect("results");
            let second = text.lines().nth(1).unwrap_or_default();
            assert_eq!(
                second.contains(",YWdlLWVuY3J5cHRpb24ub3JnL3Yx"),
                sealed,
                "{second}"
            );
            rates[i].push(n as f64 / r.wall.as_secs_f64());
            cpus[i].push(r.cpu.as_secs_f64() * 1e6 / n as f64);
            eprintln!(
                "  {}: {:.0} users/s, {:.1} µs CPU/user",
                if sealed { "sealed" } else { "unsealed" },
                rates[i].last().unwrap(),
                cpus[i].last().unwrap()
            );
        }
    }
    // The median of the pairs' differences: each pair ran back to back.
    let diffs: Vec<f64> = cpus[1].iter().zip(&cpus[0]).map(|(s, u)| s - u).collect();
    let diff = median(diffs.clone());
    t.row(
        "7. sealing, 100,000 users, --rate 0 --concurrency 64, unsealed and sealed (--encrypt-to one X25519 key) in pairs",
        "tool CPU per user grows ≤ 0.2 ms, about what sealing alone costs",
        format!(
            "unsealed {:.0} users/s, {:.1} µs CPU/user; sealed {:.0} users/s, {:.1} µs CPU/user; \
             growth {diff:.1} µs/user (pairs: {}); sealing alone {:.1} µs CPU/password",
            median(rates[0].clone()),
            median(cpus[0].clone()),
            median(rates[1].clone()),
            median(cpus[1].clone()),
            fmt_list(&diffs, 1),
            alone.as_secs_f64() * 1e6
        ),
        diff <= 200.0,
    );
}

// ---------------------------------------------------------------- real Synapse

/// The real Synapse of `scripts/bench.sh`: URL, admin token, server name,
/// and the cores the tool may use; `None` (with a note) without one.
fn real_synapse() -> Option<(String, String, String, usize)> {
    let (Ok(url), Ok(token)) = (
        std::env::var("SYNAPSE_URL"),
        std::env::var("SYNAPSE_ADMIN_TOKEN"),
    ) else {
        eprintln!("no SYNAPSE_URL: skipping the real-Synapse figures (run scripts/bench.sh)");
        return None;
    };
    let server = std::env::var("SYNAPSE_SERVER_NAME").unwrap_or_else(|_| "localhost".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Some((url, token, server, cores))
}

/// `n` users on the real Synapse, created deactivated, and the input naming them.
fn real_users(client: &admin::Admin, dir: &Path, server: &str, n: usize, tag: &str) -> Vec<String> {
    let prefix = format!("{tag}{}x", std::process::id());
    let ids: Vec<String> = (0..n)
        .map(|i| format!("@{prefix}{i:07}:{server}"))
        .collect();
    for id in &ids {
        client.create_deactivated(id);
    }
    write_input(dir, n, server, &prefix);
    ids
}

/// 200 reactivations on the real Synapse (bcrypt_rounds 12), unsealed and
/// sealed in turn, one pair per round: sealing must not slow the run.
fn seal_synapse(t: &mut Table, dir: &Path, rounds: usize) {
    let Some((url, token, server, cores)) = real_synapse() else {
        return;
    };
    let client = admin::Admin::new(&url, &token);
    let n = 200;
    let ids = real_users(&client, dir, &server, n, "s");
    let to = recipient();
    let conc = cores.to_string();
    let (mut walls, mut cpus) = ([vec![], vec![]], [vec![], vec![]]);
    for round in 0..rounds {
        for (k, sealed) in pair_order(round).into_iter().enumerate() {
            let i = usize::from(sealed);
            if round > 0 || k > 0 {
                for id in &ids {
                    client.deactivate(id);
                }
            }
            let mut args = vec!["--rate", "0", "--concurrency", conc.as_str()];
            if sealed {
                args.extend(["--encrypt-to", to.as_str()]);
            }
            let r = run_tool(dir, &url, &args, &token, None);
            assert_eq!(r.code, 0, "the real-Synapse run failed");
            walls[i].push(r.wall.as_secs_f64());
            cpus[i].push(r.cpu.as_secs_f64() * 1e6 / n as f64);
            eprintln!(
                "  real Synapse, {}: {:.1} s, tool CPU {:.0} µs/user",
                if sealed { "sealed" } else { "unsealed" },
                r.wall.as_secs_f64(),
                cpus[i].last().unwrap()
            );
        }
    }
    let (plain, sealed) = (median(walls[0].clone()), median(walls[1].clone()));
    t.row(
        &format!("7. real Synapse, bcrypt_rounds 12, {n} users, --concurrency {cores} --rate 0, unsealed and sealed in pairs"),
        "sealed ≤ 1.02 × unsealed",
        format!(
            "unsealed {plain:.1} s (runs: {}), sealed {sealed:.1} s (runs: {}): {:.3} ×; \
             tool CPU {:.0} against {:.0} µs/user",
            fmt_list(&walls[0], 1),
            fmt_list(&walls[1], 1),
            sealed / plain,
            median(cpus[0].clone()),
            median(cpus[1].clone())
        ),
        sealed <= 1.02 * plain,
    );
}

fn synapse(t: &mut Table, dir: &Path, rounds: usize) {
    let Some((url, token, server, cores)) = real_synapse() else {
        return;
    };
    let python =
        std::env::var("SYNAPSE_PYTHON_BIN").expect("SYNAPSE_PYTHON_BIN: the Synapse venv's python");

    // One bcrypt hash at the server's cost, on this machine, the way Synapse does it.
    let out = Command::new(&python)
        .args(["-c", "import bcrypt,time,statistics\nts=[]\nfor _ in range(9):\n s=time.perf_counter(); bcrypt.hashpw(b'benchmark-password-123', bcrypt.gensalt(12)); ts.append(time.perf_counter()-s)\nprint(statistics.median(ts))"])
        .output()
        .expect("python runs");
    let hash: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a hash time");
    let n = 200;
    let bound = n as f64 * hash / cores as f64;
    eprintln!(
        "  bcrypt(12): {:.0} ms; bound for {n} users on {cores} cores: {bound:.1} s",
        hash * 1000.0
    );

    let client = admin::Admin::new(&url, &token);
    let ids = real_users(&client, dir, &server, n, "b");
    let conc = cores.to_string();
    let mut walls = vec![];
    for round in 0..rounds {
        if round > 0 {
            for id in &ids {
                client.deactivate(id);
            }
        }
        let r = run_tool(
            dir,
            &url,
            &["--rate", "0", "--concurrency", &conc],
            &token,
            None,
        );
        assert_eq!(r.code, 0, "the real-Synapse run failed");
        walls.push(r.wall.as_secs_f64());
        eprintln!("  real Synapse: {:.1} s", r.wall.as_secs_f64());
    }
    let wall = median(walls.clone());
    t.row(
        &format!("4. real Synapse, bcrypt_rounds 12, {n} users, --concurrency {cores} --rate 0"),
        &format!(
            "≤ 1.15 × bound ({bound:.1} s = {n} × {:.0} ms ÷ {cores} cores)",
            hash * 1000.0
        ),
        format!(
            "{wall:.1} s = {:.2} × bound (runs: {} s)",
            wall / bound,
            fmt_list(&walls, 1)
        ),
        wall <= 1.15 * bound,
    );

    // The loop an admin would write: one curl PUT after another.
    for id in &ids {
        client.deactivate(id);
    }
    let script = dir.join("curl-loop.sh");
    let mut s = String::from("set -e\n");
    for id in &ids {
        let enc = id.replace('@', "%40").replace(':', "%3A");
        s.push_str(&format!(
            "curl -sf -o /dev/null -X PUT -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"deactivated\":false,\"password\":\"Pw-{}\"}}' \"$URL/_synapse/admin/v2/users/{enc}\"\n",
            enc.len()
        ));
    }
    std::fs::write(&script, s).unwrap();
    let start = Instant::now();
    let st = Command::new("bash")
        .arg(&script)
        .env("TOKEN", &token)
        .env("URL", &url)
        .status()
        .expect("bash");
    assert!(st.success(), "curl loop failed");
    let curl = start.elapsed().as_secs_f64();
    t.row(
        &format!("4. baseline: shell loop of {n} curl PUTs"),
        "for comparison",
        format!("{curl:.1} s = {:.2} × bound ({:.1}× slower than matrix-reactivate, which also checks each user first)", curl / bound, curl / wall),
        true,
    );
}

/// A tiny admin client (curl) for setting up the real-Synapse figures.
mod admin {
    use std::process::Command;

    pub struct Admin {
        url: String,
        token: String,
    }

    impl Admin {
        pub fn new(url: &str, token: &str) -> Self {
            Admin {
                url: url.into(),
                token: token.into(),
            }
        }

        fn call(&self, method: &str, path: &str, body: &str) {
            let st = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-X", method, "-H"])
                .arg(format!("Authorization: Bearer {}", self.token))
                .args(["-H", "Content-Type: application/json", "-d", body])
                .arg(format!("{}{}", self.url, path))
                .status()
                .expect("curl runs");
            assert!(st.success(), "{method} {path}");
        }

        pub fn create_deactivated(&self, id: &str) {
            let enc = id.replace('@', "%40").replace(':', "%3A");
            // No password: creating costs no hash.
            self.call("PUT", &format!("/_synapse/admin/v2/users/{enc}"), "{}");
            self.deactivate(id);
        }

        pub fn deactivate(&self, id: &str) {
            let enc = id.replace('@', "%40").replace(':', "%3A");
            self.call(
                "POST",
                &format!("/_synapse/admin/v1/deactivate/{enc}"),
                r#"{"erase":false}"#,
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let only: Option<&str> = args.first().map(String::as_str);
    let want = |name: &str| only.is_none_or(|o| o == name);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (addr, mock) = start_mock();
    let url = format!("http://{addr}");
    let dir = scratch();
    let mut t = Table(vec![]);
    println!("| figure | target | measured (median) | |");
    println!("|---|---|---|---|");
    if want("startup") {
        startup(&mut t, &url, &mock, &dir);
    }
    if want("throughput") {
        throughput(&mut t, &url, &mock, &dir, rounds);
    }
    if want("pacing") {
        pacing(&mut t, &url, &mock, &dir, rounds);
    }
    if want("memory") {
        memory(&mut t, &url, &mock, &dir);
    }
    if want("synapse") {
        synapse(&mut t, &dir, rounds);
    }
    if want("find") {
        find(&mut t, &url, &mock, &dir, rounds);
    }
    if want("seal") {
        seal_mock(&mut t, &url, &mock, &dir, rounds);
    }
    if want("seal-synapse") {
        seal_synapse(&mut t, &dir, rounds);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
