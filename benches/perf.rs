//! Performance benchmark: throughput, pacing, memory, a real Synapse, start-up,
//! `find` over 100,000 deactivated users, `snapshot` of 10,000 users,
//! `--restore-from` against a real Synapse (50 users; one user with a key
//! backup of 100,000 sessions), the cost of sealing passwords
//! (`--encrypt-to`) on the mock and on the real Synapse, and `--rate auto`
//! on both real Synapses while a separate client probes the server (`auto`).
//!
//! Run with `scripts/bench.sh [FIGURE]` (which also starts a Synapse with
//! `bcrypt_rounds: 12` for the real-server figures, and one with
//! `bcrypt_rounds: 4` for the restore figures and `auto`), or `cargo bench
//! --bench perf` for the mock-server figures alone. FIGURE is one of startup,
//! throughput, pacing, memory, synapse, find, snapshot_many, restore,
//! restore_big, seal, seal-synapse, auto. Prints a Markdown table of medians.
//!
//! The tool runs as a real process (the release binary) against a small hyper
//! server in this process that answers at once; CPU time and peak RSS come from
//! the kernel (`wait4`).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Active users the mock lists for `snapshot` (none unless a figure sets it).
    snap_users: AtomicU64,
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
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
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
    let snap_users = mock.snap_users.load(Ordering::Relaxed);
    if let Some(body) = snapshot_answer(snap_users, &path, &query, &auth) {
        mock.gets.fetch_add(1, Ordering::Relaxed);
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
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

// ---------------------------------------------------------------- snapshot's server

/// Sessions in each listed user's key backup, in `SNAP_ROOMS` rooms.
const SNAP_SESSIONS: u64 = 20;
const SNAP_ROOMS: u64 = 4;

/// The answers `snapshot` needs for `n` active users `@snap{i:07}:example.org`:
/// the v3 list of active users in pages; each user (an e-mail, a profile),
/// their memberships, their account data and a puppet login as the admin;
/// then, with the puppet token `snaptok{i}`, their push rules, their backup
/// version and its sessions, and the logout. Anything else is `None`.
fn snapshot_answer(n: u64, path: &str, query: &str, auth: &str) -> Option<String> {
    if path == "/_synapse/admin/v3/users" {
        // find lists deactivated users from the same path.
        return query
            .contains("deactivated=false")
            .then(|| snap_page(n, query));
    }
    if let Some(rest) = path
        .strip_prefix("/_synapse/admin/v2/users/%40snap")
        .or_else(|| path.strip_prefix("/_synapse/admin/v1/users/%40snap"))
    {
        let (num, tail) = rest.split_once("%3Aexample.org")?;
        let i: u64 = num.parse().ok()?;
        return match tail {
            "" => Some(snap_user(i)),
            "/memberships" => Some(format!(
                r#"{{"memberships":{{"!team{}:example.org":"join","!big{}:example.org":"join","!old{i}:example.org":"leave"}}}}"#,
                i / TEAM_SIZE,
                i % BIG_ROOMS
            )),
            "/accountdata" => Some(snap_account_data(i)),
            "/login" => Some(format!(r#"{{"access_token":"snaptok{i}"}}"#)),
            _ => None,
        };
    }
    let i: u64 = auth.strip_prefix("Bearer snaptok")?.parse().ok()?;
    match path {
        "/_matrix/client/v3/pushrules/" => Some(SNAP_PUSH_RULES.to_owned()),
        "/_matrix/client/v3/room_keys/version" => Some(format!(
            r#"{{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{{"public_key":"{}","signatures":{{"@snap{i:07}:example.org":{{"ed25519:DEVICE{i}":"{}"}}}}}},"count":{SNAP_SESSIONS},"etag":"{SNAP_SESSIONS}","version":"1"}}"#,
            b64(i, 43),
            b64(i + 1, 86)
        )),
        "/_matrix/client/v3/room_keys/keys" => Some(backup_keys(
            &format!("snap{i}"),
            "example.org",
            0..SNAP_SESSIONS,
            SNAP_SESSIONS / SNAP_ROOMS,
        )),
        "/_matrix/client/v3/logout" => Some("{}".into()),
        _ => None,
    }
}

/// One page of the active users, as Synapse's v3 list pages them.
fn snap_page(n: u64, query: &str) -> String {
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (from, limit) = (param("from").unwrap_or(0), param("limit").unwrap_or(100));
    let end = (from + limit).min(n);
    let users: Vec<String> = (from..end)
        .map(|i| format!(r#"{{"name":"@snap{i:07}:example.org","deactivated":false,"erased":false,"locked":false,"is_guest":false,"admin":false}}"#))
        .collect();
    let next = if end < n {
        format!(r#","next_token":"{end}""#)
    } else {
        String::new()
    };
    format!(r#"{{"users":[{}],"total":{n}{next}}}"#, users.join(","))
}

fn snap_user(i: u64) -> String {
    format!(
        r#"{{"name":"@snap{i:07}:example.org","displayname":"Snap User {i}","avatar_url":"mxc://example.org/{}","threepids":[{{"medium":"email","address":"snap{i}@example.org","validated_at":1700000000000,"added_at":1700000000000}}],"admin":false,"deactivated":false,"erased":false,"locked":false,"shadow_banned":false,"creation_ts":1700000000,"user_type":null,"is_guest":false,"external_ids":[]}}"#,
        b64(i, 24)
    )
}

/// What a user of Element has: DMs, an ignore list, recent rooms, the
/// recovery setup (secret storage, cross-signing, backup key), emoji; per
/// room, tags and read markers. About 3 KB.
fn snap_account_data(i: u64) -> String {
    let secret = |seed: u64| {
        format!(
            r#"{{"encrypted":{{"KEY{i}":{{"iv":"{}","ciphertext":"{}","mac":"{}"}}}}}}"#,
            b64(seed, 22),
            b64(seed + 1, 64),
            b64(seed + 2, 43)
        )
    };
    let direct: Vec<String> = (0..8)
        .map(|k| format!(r#""@friend{k}:example.org":["!dm{i}x{k}:example.org"]"#))
        .collect();
    let rooms: Vec<String> = (0..3)
        .map(|k| format!(
            r#""!team{k}:example.org":{{"m.tag":{{"tags":{{"m.favourite":{{"order":0.{k}}}}}}},"m.fully_read":{{"event_id":"${}"}}}}"#,
            b64(i * 10 + k, 43)
        ))
        .collect();
    format!(
        r#"{{"account_data":{{"global":{{"m.direct":{{{}}},"m.ignored_user_list":{{"ignored_users":{{"@spam1:example.org":{{}},"@spam2:example.org":{{}}}}}},"im.vector.setting.breadcrumbs":{{"recent_rooms":["!team0:example.org","!big0:example.org","!dm{i}x0:example.org"]}},"m.secret_storage.default_key":{{"key":"KEY{i}"}},"m.secret_storage.key.KEY{i}":{{"algorithm":"m.secret_storage.v1.aes-hmac-sha2","iv":"{}","mac":"{}"}},"m.cross_signing.master":{},"m.cross_signing.self_signing":{},"m.cross_signing.user_signing":{},"m.megolm_backup.v1":{},"io.element.recent_emoji":{{"recent_emoji":[["👍",12],["😂",4]]}}}},"rooms":{{{}}}}}}}"#,
        direct.join(","),
        b64(i, 22),
        b64(i + 1, 43),
        secret(i * 100),
        secret(i * 100 + 10),
        secret(i * 100 + 20),
        secret(i * 100 + 30),
        rooms.join(",")
    )
}

/// Synapse's default push rules, shortened, with three of the user's own.
const SNAP_PUSH_RULES: &str = r#"{"global":{"override":[{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]},{"rule_id":"mute-team","default":false,"enabled":true,"conditions":[{"kind":"event_match","key":"room_id","pattern":"!team0:example.org"}],"actions":[]},{"rule_id":".m.rule.suppress_notices","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"content.msgtype","pattern":"m.notice"}],"actions":[]},{"rule_id":".m.rule.invite_for_me","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.member"},{"kind":"event_match","key":"content.membership","pattern":"invite"},{"kind":"event_match","key":"state_key","pattern":"@snap:example.org"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]},{"rule_id":".m.rule.member_event","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.member"}],"actions":[]},{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@snap:example.org"}],"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]},{"rule_id":".m.rule.is_room_mention","default":true,"enabled":true,"conditions":[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},{"kind":"sender_notification_permission","key":"room"}],"actions":["notify",{"set_tweak":"highlight"}]},{"rule_id":".m.rule.tombstone","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},{"kind":"event_match","key":"state_key","pattern":""}],"actions":["notify",{"set_tweak":"highlight"}]},{"rule_id":".m.rule.reaction","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.reaction"}],"actions":[]}],"content":[{"rule_id":"deploy","default":false,"enabled":true,"pattern":"deploy","actions":["notify",{"set_tweak":"highlight"}]}],"postcontent":[],"room":[{"rule_id":"!big0:example.org","default":false,"enabled":true,"actions":[]}],"sender":[],"underride":[{"rule_id":".m.rule.call","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.call.invite"}],"actions":["notify",{"set_tweak":"sound","value":"ring"}]},{"rule_id":".m.rule.room_one_to_one","default":true,"enabled":true,"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.message"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]},{"rule_id":".m.rule.encrypted_room_one_to_one","default":true,"enabled":true,"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]},{"rule_id":".m.rule.message","default":true,"enabled":false,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.message"}],"actions":["notify"]},{"rule_id":".m.rule.encrypted","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}],"actions":["notify"]}]}}"#;

/// `len` characters of unpadded base64 that depend only on `seed`: key
/// material and ciphertext look like this in a backup.
fn b64(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // splitmix64
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|k| {
            if k % 10 == 0 {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                x = z ^ (z >> 31);
            }
            ALPHABET[((x >> ((k % 10) * 6)) & 63) as usize] as char
        })
        .collect()
}

/// A `{"rooms": …}` body of backup sessions `range` of one user (named by
/// `who`), `per_room` sessions to a room (sessions 0 to `per_room - 1` in
/// the first room, and so on, as a client uploads a room's keys together):
/// 43-character session IDs and a `session_data` of about 300 bytes, as a
/// megolm backup holds them. The body of `GET /room_keys/keys` and of
/// `PUT /room_keys/keys` alike.
fn backup_keys(who: &str, server: &str, range: std::ops::Range<u64>, per_room: u64) -> String {
    let seed = who
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    let mut by_room: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for s in range {
        let k = seed ^ s.wrapping_mul(0x1000_0001);
        by_room.entry(s / per_room).or_default().push(format!(
            r#""{}":{{"first_message_index":{},"forwarded_count":0,"is_verified":{},"session_data":{{"ephemeral":"{}","ciphertext":"{}","mac":"{}"}}}}"#,
            b64(k, 43),
            s % 7,
            s % 3 == 0,
            b64(k + 1, 43),
            b64(k + 2, 224),
            b64(k + 3, 11)
        ));
    }
    let rooms: Vec<String> = by_room
        .iter()
        .map(|(r, sessions)| {
            format!(
                r#""!{who}r{r}:{server}":{{"sessions":{{{}}}}}"#,
                sessions.join(",")
            )
        })
        .collect();
    format!(r#"{{"rooms":{{{}}}}}"#, rooms.join(","))
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

// ---------------------------------------------------------------- --rate auto (real Synapse)

/// How often the separate client asks the server for its versions.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Probes with no tool running, for the idle median.
const IDLE_PROBES: usize = 30;
/// Users per run of the `auto` figure, on each server.
const AUTO_USERS: usize = 200;
/// The fixed concurrencies the sweep tries with `--rate 0`.
const SWEEP: std::ops::RangeInclusive<usize> = 1..=8;

/// Another client of the server: `GET /_matrix/client/versions` every
/// 100 ms on a new connection, timed from connecting to the end of the
/// answer. A failed or timed-out probe counts with the time it took.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<f64>, usize)>,
}

impl Probe {
    /// Starts probing `url` (`http://HOST:PORT`) on a thread of its own.
    fn start(url: &str) -> Self {
        let authority = probe_authority(url);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread =
            std::thread::spawn(move || probe_loop(&authority, |_| s.load(Ordering::SeqCst)));
        Probe { stop, thread }
    }

    /// Stops probing; the answer times (ms) and how many probes failed.
    fn finish(self) -> (Vec<f64>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the probe thread")
    }
}

/// `HOST:PORT` of a plain-HTTP server URL.
fn probe_authority(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .expect("the probe speaks plain HTTP: an http:// server URL");
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Probes every `PROBE_EVERY` until `done(probes so far)`: the answer
/// times (ms) and how many probes failed.
fn probe_loop(authority: &str, done: impl Fn(usize) -> bool) -> (Vec<f64>, usize) {
    let (mut times, mut failed) = (vec![], 0);
    let mut next = Instant::now();
    while !done(times.len()) {
        let started = Instant::now();
        if let Err(e) = probe_once(authority) {
            if failed == 0 {
                eprintln!("  probe: {e}");
            }
            failed += 1;
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (a slow answer): the next probe now, then every 100 ms again.
            next = now;
        }
    }
    (times, failed)
}

/// One `GET /_matrix/client/versions`, read to the end of the answer.
fn probe_once(authority: &str) -> Result<(), String> {
    use std::io::Read;
    let timeout = Some(Duration::from_secs(30));
    let mut s = std::net::TcpStream::connect(authority).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    s.set_write_timeout(timeout).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    write!(
        s,
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut answer = vec![];
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let status = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    if status.starts_with(b"HTTP/1.1 200") || status.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!("answer: {}", String::from_utf8_lossy(status)))
    }
}

/// The median answer time (ms) of `IDLE_PROBES` probes with no tool running.
fn idle_probe(url: &str) -> f64 {
    let (times, failed) = probe_loop(&probe_authority(url), |n| n >= IDLE_PROBES);
    assert_eq!(failed, 0, "the idle probes of {url} failed");
    median(times)
}

/// "Within 2× idle": below a few milliseconds twice idle is noise, so the
/// bound is max(2 × idle, idle + 5 ms).
fn probe_bound(idle_ms: f64) -> f64 {
    (2.0 * idle_ms).max(idle_ms + 5.0)
}

/// One run of the tool with the separate client probing the server.
struct Probed {
    wall: f64,
    probe_ms: f64,
    probes: usize,
    failed: usize,
}

/// Runs the tool on the users of `dir/in.csv` with `args` under the probe
/// and checks that it succeeded.
fn run_probed(dir: &Path, url: &str, token: &str, args: &[&str]) -> Probed {
    let probe = Probe::start(url);
    let r = run_tool(dir, url, args, token, None);
    let (times, failed) = probe.finish();
    assert_eq!(
        r.code,
        0,
        "matrix-reactivate {} failed (exit code {})",
        args.join(" "),
        r.code
    );
    Probed {
        wall: r.wall.as_secs_f64(),
        probes: times.len(),
        probe_ms: median(times),
        failed,
    }
}

fn deactivate_all(client: &admin::Admin, ids: &[String]) {
    for id in ids {
        client.deactivate(id);
    }
}

/// A real Synapse of the `auto` figure, and its admin client.
struct AutoServer {
    url: String,
    token: String,
    /// How the notes on stderr name it.
    label: &'static str,
    client: admin::Admin,
}

impl AutoServer {
    fn new(url: &str, token: &str, label: &'static str) -> Self {
        AutoServer {
            url: url.into(),
            token: token.into(),
            label,
            client: admin::Admin::new(url, token),
        }
    }

    /// Runs the tool with `args` under the probe, with a note on stderr.
    fn run(&self, dir: &Path, args: &[&str], what: &str) -> Probed {
        let r = run_probed(dir, &self.url, &self.token, args);
        eprintln!(
            "  {}, {what}: {:.1} s, probe median {:.1} ms ({} probes{})",
            self.label,
            r.wall,
            r.probe_ms,
            r.probes,
            failed_note(r.failed)
        );
        r
    }

    /// Runs `--rate auto` (with `args` after it) `repeats` times, each after
    /// deactivating `ids`, and shows the `"pace"` object of each run's
    /// `--summary-json` if it has one.
    fn auto_runs(&self, dir: &Path, ids: &[String], args: &[&str], repeats: usize) -> Vec<Probed> {
        let summary = dir.join("summary.json");
        let mut all = vec!["--rate", "auto"];
        all.extend_from_slice(args);
        let what = all.join(" ");
        all.extend(["--summary-json", "summary.json"]);
        let mut runs = vec![];
        for _ in 0..repeats {
            deactivate_all(&self.client, ids);
            let _ = std::fs::remove_file(&summary);
            runs.push(self.run(dir, &all, &what));
            let pace = std::fs::read_to_string(&summary)
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v.get("pace").cloned());
            if let Some(pace) = pace {
                eprintln!("    pace: {pace}");
            }
        }
        runs
    }
}

fn failed_note(failed: usize) -> String {
    if failed == 0 {
        String::new()
    } else {
        format!(", {failed} failed")
    }
}

/// How many rounds the `auto` figure runs: once, or `BENCH_ROUNDS` when set.
/// A round of the `bcrypt_rounds: 12` part is the whole sweep and one auto
/// run; on the `bcrypt_rounds: 4` server the default pace runs once.
fn auto_repeats() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `--rate auto` against the two real Synapses of `scripts/bench.sh`, with
/// a separate client probing the server during each run.
///
/// 1. `bcrypt_rounds: 12` (`SYNAPSE_*`): 200 users with `--rate 0
///    --concurrency N` for N = 1…8, then with `--rate auto --concurrency 8`.
///    Auto must finish within 1.15 × the fastest fixed run among those that
///    kept the probe's median within max(2 × idle, idle + 5 ms), and keep
///    its own probe median within that bound.
/// 2. `bcrypt_rounds: 4` (`RESTORE_SYNAPSE_*`): 200 users at the default pace
///    (`--rate 5`), then with `--rate auto`: at least 5 × faster.
fn auto(t: &mut Table, dir: &Path) {
    let repeats = auto_repeats();
    if let Some((url, token, server, _)) = real_synapse() {
        let small = AutoServer::new(&url, &token, "bcrypt_rounds 12");
        auto_small_server(t, dir, &small, &server, repeats);
    }
    let var = |k: &str| std::env::var(format!("RESTORE_SYNAPSE_{k}")).ok();
    match (var("URL"), var("ADMIN_TOKEN")) {
        (Some(url), Some(token)) => {
            let fast = AutoServer::new(&url, &token, "bcrypt_rounds 4");
            let server = var("SERVER_NAME").unwrap_or_else(|| "localhost".into());
            auto_fast_server(t, dir, &fast, &server, repeats);
        }
        _ => eprintln!(
            "no RESTORE_SYNAPSE_URL: skipping --rate auto on bcrypt_rounds 4 (run scripts/bench.sh auto)"
        ),
    }
}

/// The median wall time and probe median of `runs`, and a note listing
/// each run when there are several.
fn auto_medians(runs: &[Probed]) -> (f64, f64, String) {
    let walls: Vec<f64> = runs.iter().map(|r| r.wall).collect();
    let probes: Vec<f64> = runs.iter().map(|r| r.probe_ms).collect();
    let note = if runs.len() > 1 {
        format!(
            " (runs: {} s; probe {} ms)",
            fmt_list(&walls, 1),
            fmt_list(&probes, 1)
        )
    } else {
        String::new()
    };
    (median(walls), median(probes), note)
}

/// Part 1 of `auto`: the sweep of fixed concurrencies and `--rate auto` on
/// the `bcrypt_rounds: 12` server.
fn auto_small_server(t: &mut Table, dir: &Path, s: &AutoServer, server: &str, repeats: usize) {
    let n = AUTO_USERS;
    let ids = real_users(&s.client, dir, server, n, "auto");
    let idle = idle_probe(&s.url);
    let bound = probe_bound(idle);
    eprintln!(
        "  {}: idle probe median {idle:.1} ms, bound {bound:.1} ms",
        s.label
    );

    // Each round runs the sweep and auto under the same conditions (auto
    // first in odd rounds, last in even ones); each setting's figure is its
    // median over the rounds.
    let mut fixed: Vec<Vec<Probed>> = SWEEP.map(|_| vec![]).collect();
    let mut runs = vec![];
    let mut first = true;
    for round in 0..repeats {
        let auto_first = round % 2 == 0;
        if auto_first {
            runs.extend(s.auto_runs(dir, &ids, &["--concurrency", "8"], 1));
            first = false;
        }
        for (i, c) in SWEEP.enumerate() {
            if !first {
                deactivate_all(&s.client, &ids);
            }
            first = false;
            let conc = c.to_string();
            let args = ["--rate", "0", "--concurrency", conc.as_str()];
            fixed[i].push(s.run(dir, &args, &args.join(" ")));
        }
        if !auto_first {
            runs.extend(s.auto_runs(dir, &ids, &["--concurrency", "8"], 1));
        }
    }
    let sweep: Vec<(usize, Probed)> = SWEEP
        .zip(&fixed)
        .map(|(c, rs)| {
            let (wall, probe_ms, _) = auto_medians(rs);
            let probes = rs.iter().map(|r| r.probes).sum();
            let failed = rs.iter().map(|r| r.failed).sum();
            (
                c,
                Probed {
                    wall,
                    probe_ms,
                    probes,
                    failed,
                },
            )
        })
        .collect();
    let within = |r: &Probed| r.probe_ms <= bound;
    let best = sweep
        .iter()
        .filter(|(_, r)| within(r))
        .min_by(|a, b| a.1.wall.total_cmp(&b.1.wall));
    eprintln!(
        "  sweep, {}, {n} users, --rate 0 (probe idle {idle:.1} ms, bound {bound:.1} ms):",
        s.label
    );
    eprintln!("    N   wall (s)   probe median (ms)");
    for (c, r) in &sweep {
        let best_mark = if best.is_some_and(|(b, _)| b == c) {
            ", best"
        } else {
            ""
        };
        eprintln!(
            "    {c}   {:8.1}   {:17.1}   {}{best_mark}",
            r.wall,
            r.probe_ms,
            if within(r) { "within" } else { "over" }
        );
    }
    for ((c, r), rs) in sweep.iter().zip(&fixed) {
        let (_, _, runs_note) = auto_medians(rs);
        t.row(
            &format!("10. sweep: real Synapse (bcrypt_rounds 12), {n} users, --rate 0 --concurrency {c}, with a separate client probing"),
            "for comparison",
            format!(
                "{:.1} s; probe median {:.1} ms ({} the bound of {bound:.1} ms){runs_note}",
                r.wall,
                r.probe_ms,
                if within(r) { "within" } else { "over" }
            ),
            true,
        );
    }

    let (wall, probe, runs_note) = auto_medians(&runs);
    let (got, ok) = match best {
        Some((c, b)) => (
            format!(
                "{wall:.1} s = {:.2} × best (--concurrency {c}, {:.1} s); probe median {probe:.1} ms \
                 (idle {idle:.1} ms, bound {bound:.1} ms){runs_note}",
                wall / b.wall,
                b.wall
            ),
            wall <= 1.15 * b.wall && probe <= bound,
        ),
        None => (
            format!(
                "{wall:.1} s; probe median {probe:.1} ms (idle {idle:.1} ms, bound {bound:.1} ms); \
                 no --concurrency kept the probe within the bound{runs_note}"
            ),
            false,
        ),
    };
    t.row(
        &format!("10. --rate auto --concurrency 8, real Synapse (bcrypt_rounds 12), {n} users, with a separate client probing"),
        "≤ 1.15 × the fastest --rate 0 --concurrency 1…8 that keeps the probe median ≤ max(2 × idle, idle + 5 ms); its own probe median within that bound",
        got,
        ok,
    );
}

/// Part 2 of `auto`: the default pace and `--rate auto` on the
/// `bcrypt_rounds: 4` server.
fn auto_fast_server(t: &mut Table, dir: &Path, s: &AutoServer, server: &str, repeats: usize) {
    let n = AUTO_USERS;
    let ids = real_users(&s.client, dir, server, n, "autofast");
    let idle = idle_probe(&s.url);
    let bound = probe_bound(idle);
    eprintln!(
        "  {}: idle probe median {idle:.1} ms, bound {bound:.1} ms",
        s.label
    );

    let default = s.run(dir, &[], "default pace");
    let runs = s.auto_runs(dir, &ids, &[], repeats);
    let (wall, probe, runs_note) = auto_medians(&runs);
    let speedup = default.wall / wall;
    t.row(
        &format!("10. --rate auto, real Synapse (bcrypt_rounds 4), {n} users, against the default --rate 5"),
        "≥ 5 × faster",
        format!(
            "{wall:.1} s against {:.1} s: {speedup:.1} ×; probe median {probe:.1} ms \
             (default pace {:.1} ms; idle {idle:.1} ms, bound {bound:.1} ms){runs_note}",
            default.wall, default.probe_ms
        ),
        speedup >= 5.0,
    );
}

// ---------------------------------------------------------------- snapshot

/// `snapshot` of every active user the mock lists (no INPUT: the v3 list in
/// pages), at 1,000 and at 10,000 users: users/s, CPU per user, and peak
/// RSS, which must not grow with the number of users.
fn snapshot_many(t: &mut Table, url: &str, mock: &Mock, dir: &Path, rounds: usize) {
    let mut peaks = vec![];
    for n in [1_000u64, 10_000] {
        mock.snap_users.store(n, Ordering::SeqCst);
        let (mut rates, mut rss, mut cpus) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            mock.reset();
            let out = dir.join("many.snapshot");
            let _ = std::fs::remove_file(&out);
            let args = [
                "snapshot",
                "-H",
                url,
                "-o",
                "many.snapshot",
                "--rate",
                "0",
                "--concurrency",
                "16",
                "--quiet",
                "--no-progress",
            ];
            let r = run_measured(dir, &args, TOKEN, None);
            assert_eq!(r.code, 0, "the snapshot run failed");
            let (users, sessions) = snapshot_counts(&out);
            assert_eq!(
                (users, sessions),
                (n, n * SNAP_SESSIONS),
                "every user and every session in the file"
            );
            // Eight requests a user (the user, memberships, account data,
            // login, push rules, backup version, sessions, logout), the
            // pages of 500, and the preflight's admin read and memberships
            // probe: each user read once.
            let gets = mock.gets.load(Ordering::SeqCst);
            assert_eq!(gets, 8 * n + n.div_ceil(500) + 2, "requests to the mock");
            // What the mock serves for every user: an e-mail, 2 rooms joined,
            // 16 items of account data, 3 rules of their own.
            assert_eq!(
                image_shape(&out, "@snap0000007:example.org"),
                [1, 2, 16, 3],
                "a user's before-image in the snapshot"
            );
            let _ = std::fs::remove_file(&out);
            rates.push(n as f64 / r.wall.as_secs_f64());
            cpus.push(r.cpu.as_secs_f64() * 1e6 / n as f64);
            rss.push(r.max_rss_kib as f64 / 1024.0);
            eprintln!(
                "  snapshot {n}: {:.0} users/s, {:.0} µs CPU/user, {:.1} MB",
                rates.last().unwrap(),
                cpus.last().unwrap(),
                rss.last().unwrap()
            );
        }
        mock.snap_users.store(0, Ordering::SeqCst);
        let mb = median(rss.clone());
        peaks.push(mb);
        t.row(
            &format!(
                "7. snapshot, {n} active users (mock: e-mail, profile, 2 rooms, 16 items of account data, push rules, {SNAP_SESSIONS} backup sessions each), --rate 0 --concurrency 16"
            ),
            "peak RSS < 50 MB",
            format!(
                "{:.0} users/s (runs: {}); tool CPU {:.0} µs/user; peak RSS {mb:.1} MB (runs: {})",
                median(rates.clone()),
                fmt_list(&rates, 0),
                median(cpus),
                fmt_list(&rss, 1)
            ),
            mb < 50.0,
        );
    }
    let growth = peaks[1] - peaks[0];
    t.row(
        "7. snapshot memory is flat: peak RSS at 10,000 users minus at 1,000",
        "< 5 MB (not 10 × the users)",
        format!("{growth:+.1} MB ({:.1} → {:.1} MB)", peaks[0], peaks[1]),
        growth < 5.0,
    );
}

/// A user's e-mails, rooms, items of account data and own push rules, as
/// counted in the snapshot file.
fn image_shape(path: &Path, user: &str) -> [i64; 4] {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("cannot open the snapshot {}: {e}", path.display()));
    conn.query_row(
        "SELECT json_array_length(image, '$.threepids'), json_array_length(image, '$.rooms'), \
         json_array_length(image, '$.account_data'), \
         json_array_length(image, '$.push_rules.custom') FROM images WHERE user_id = ?1",
        [user],
        |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
    )
    .unwrap_or_else(|e| panic!("{user} in {}: {e}", path.display()))
}

/// (users, backup sessions) in a snapshot file.
fn snapshot_counts(path: &Path) -> (u64, u64) {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("cannot open the snapshot {}: {e}", path.display()));
    let count = |sql: &str| -> u64 {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .unwrap_or_else(|e| panic!("{sql} in {}: {e}", path.display())) as u64
    };
    (
        count("SELECT count(*) FROM images"),
        count("SELECT count(*) FROM backup_sessions"),
    )
}

// ---------------------------------------------------------------- restore (real Synapse)

/// The Synapse `scripts/bench.sh` starts for the restore figures, with
/// `bcrypt_rounds: 4` (so that the figures measure the restore, not the
/// password hash), from its `RESTORE_SYNAPSE_*` variables.
struct RestoreServer {
    url: String,
    token: String,
    server: String,
    python: String,
    db: PathBuf,
}

impl RestoreServer {
    fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(format!("RESTORE_SYNAPSE_{k}")).ok();
        let (Some(url), Some(token), Some(db)) = (var("URL"), var("ADMIN_TOKEN"), var("DB_PATH"))
        else {
            eprintln!(
                "no RESTORE_SYNAPSE_URL/DB_PATH: skipping the restore figures (run scripts/bench.sh restore)"
            );
            return None;
        };
        Some(RestoreServer {
            url,
            token,
            server: var("SERVER_NAME").unwrap_or_else(|| "localhost".into()),
            python: var("PYTHON_BIN").unwrap_or_else(|| "python3".into()),
            db: PathBuf::from(db),
        })
    }

    /// A copy of the server's database as a backup would be taken while it
    /// runs: SQLite's backup API (Synapse runs in WAL mode).
    fn copy_database(&self, to: &Path) {
        let _ = std::fs::remove_file(to);
        let script = "import sqlite3, sys\n\
                      src = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
                      dst = sqlite3.connect(sys.argv[2])\n\
                      src.backup(dst)\n\
                      dst.close()\n\
                      src.close()\n";
        let st = Command::new(&self.python)
            .args(["-c", script])
            .arg(&self.db)
            .arg(to)
            .status()
            .expect("python runs");
        assert!(st.success(), "copying {} failed", self.db.display());
    }
}

/// The `restored` cell a user seeded by `matrix::seed_user` must get back
/// after a deactivation without erasure (the display name is still there:
/// counted as given back, not written).
fn expected_restored(sessions: u64) -> String {
    format!(
        "emails:1;profile:1;account_data:{};room_account_data:{};push_rules:{};backup_keys:{sessions}",
        matrix::GLOBAL_DATA.len(),
        matrix::ROOM_DATA_ROOMS,
        matrix::CUSTOM_RULES + matrix::CHANGED_DEFAULTS
    )
}

/// Every row of out.csv is a reactivation whose `restored` cell is
/// `expected`, with nothing in `error`: a restore that gave back less cannot
/// pass for a fast one. Never prints the password column.
fn check_restored(dir: &Path, n: usize, expected: &str) {
    let path = dir.join("out.csv");
    let mut rdr = csv::Reader::from_path(&path).expect("the results file");
    let headers = rdr.headers().expect("a header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {}", path.display()))
    };
    let (user, status, error, restored) =
        (col("user_id"), col("status"), col("error"), col("restored"));
    let mut rows = 0;
    for rec in rdr.records() {
        let rec = rec.expect("a results row");
        rows += 1;
        assert!(
            &rec[status] == "reactivated" && &rec[restored] == expected && rec[error].is_empty(),
            "{}: status {}, restored {:?}, error {:?}; expected restored {expected:?}",
            &rec[user],
            &rec[status],
            &rec[restored],
            &rec[error]
        );
    }
    assert_eq!(rows, n, "one row per user in {}", path.display());
}

/// Runs `snapshot` of the users of in.csv into `file` (none there before)
/// and checks it holds `users` users and `sessions` sessions.
fn take_snapshot(
    server: &RestoreServer,
    dir: &Path,
    file: &Path,
    users: u64,
    sessions: u64,
) -> Run {
    let _ = std::fs::remove_file(file);
    let out = file.to_string_lossy();
    let args = [
        "snapshot",
        "-H",
        &server.url,
        "in.csv",
        "-o",
        &out,
        "--rate",
        "0",
        "--concurrency",
        "2",
        "--quiet",
        "--no-progress",
    ];
    let r = run_measured(dir, &args, &server.token, None);
    assert_eq!(r.code, 0, "the snapshot into {out} failed");
    assert_eq!(
        snapshot_counts(file),
        (users, sessions),
        "every user and session in {out}"
    );
    r
}

/// `rounds` times: deactivates every user of `ids` (without erasure),
/// restores them from `source` (`--concurrency 2 --rate 0`), checks every
/// row and reads the first user back from the server.
fn restore_rounds(
    server: &RestoreServer,
    m: &matrix::Matrix,
    dir: &Path,
    ids: &[String],
    sessions: u64,
    source: &Path,
    rounds: usize,
) -> Vec<Run> {
    let expected = expected_restored(sessions);
    let source = source.to_string_lossy();
    (0..rounds)
        .map(|_| {
            m.deactivate_all(ids);
            let r = run_tool(
                dir,
                &server.url,
                &["--restore-from", &source, "--concurrency", "2", "--rate", "0"],
                &server.token,
                None,
            );
            assert_eq!(r.code, 0, "the restore from {source} failed");
            check_restored(dir, ids.len(), &expected);
            m.verify_user(&ids[0], 0, sessions);
            let n = ids.len() as f64;
            eprintln!(
                "  restore of {} users from {source}: {:.1} s, {:.1} users/s, {:.0} sessions/s, {:.1} ms CPU/user, {:.1} MB",
                ids.len(),
                r.wall.as_secs_f64(),
                n / r.wall.as_secs_f64(),
                n * sessions as f64 / r.wall.as_secs_f64(),
                r.cpu.as_secs_f64() * 1e3 / n,
                r.max_rss_kib as f64 / 1024.0
            );
            r
        })
        .collect()
}

/// The two before-images of the users in.csv names: a snapshot, and a copy
/// of the database taken right after it.
fn before_images(
    server: &RestoreServer,
    dir: &Path,
    name: &str,
    users: u64,
    sessions: u64,
) -> (Run, [(&'static str, PathBuf); 2]) {
    let snap = dir.join(format!("{name}.snapshot"));
    let r = take_snapshot(server, dir, &snap, users, sessions);
    let copy = dir.join(format!("{name}-homeserver.db"));
    server.copy_database(&copy);
    (
        r,
        [
            ("a snapshot", snap),
            ("a copy of the SQLite database", copy),
        ],
    )
}

/// 50 users with what a user of Element has (e-mail, DMs, ignore list,
/// settings, recovery setup, per-room data, push rules, a key backup of 200
/// sessions); their before-image from `snapshot` and from a copy of the
/// database; then, per source and round: deactivate them all, restore them,
/// check every `restored` cell.
fn restore(t: &mut Table, dir: &Path, rounds: usize) {
    let Some(server) = RestoreServer::from_env() else {
        return;
    };
    let (n, sessions) = (50usize, 200u64);
    let m = matrix::Matrix::new(&server.url, &server.token);
    let prefix = format!("r{}x", std::process::id());
    let ids: Vec<String> = (0..n)
        .map(|i| format!("@{prefix}{i:07}:{}", server.server))
        .collect();
    let started = Instant::now();
    // 200 sessions in 10 rooms.
    m.seed_all(&ids, sessions, 20);
    eprintln!(
        "  restore: {n} users seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    write_input(dir, n, &server.server, &prefix);
    let all = n as u64 * sessions;
    let (r, sources) = before_images(&server, dir, "restore", n as u64, all);
    let wall = r.wall.as_secs_f64();
    t.row(
        &format!("8. snapshot of {n} users ({sessions} backup sessions each), real Synapse, --rate 0 --concurrency 2"),
        "for comparison",
        format!(
            "{:.1} users/s, {:.0} sessions/s ({wall:.1} s); tool CPU {:.1} ms/user; peak RSS {:.1} MB",
            n as f64 / wall,
            all as f64 / wall,
            r.cpu.as_secs_f64() * 1e3 / n as f64,
            r.max_rss_kib as f64 / 1024.0
        ),
        true,
    );
    let items = expected_restored(sessions).replace(';', ", ");
    for (label, source) in &sources {
        let runs = restore_rounds(&server, &m, dir, &ids, sessions, source, rounds);
        let users: Vec<f64> = runs
            .iter()
            .map(|r| n as f64 / r.wall.as_secs_f64())
            .collect();
        let keys: Vec<f64> = runs
            .iter()
            .map(|r| all as f64 / r.wall.as_secs_f64())
            .collect();
        let cpus: Vec<f64> = runs
            .iter()
            .map(|r| r.cpu.as_secs_f64() * 1e3 / n as f64)
            .collect();
        let rss: Vec<f64> = runs.iter().map(|r| r.max_rss_kib as f64 / 1024.0).collect();
        t.row(
            &format!(
                "8. restore from {label}, real Synapse (bcrypt_rounds 4), {n} users × ({items}), --concurrency 2 --rate 0"
            ),
            "every row restored as expected",
            format!(
                "{:.1} users/s (runs: {}), {:.0} sessions/s; tool CPU {:.1} ms/user; peak RSS {:.1} MB",
                median(users.clone()),
                fmt_list(&users, 1),
                median(keys),
                median(cpus),
                median(rss)
            ),
            true,
        );
    }
}

/// One user with a key backup of 100,000 sessions in 500 rooms (uploaded
/// once, in pages of 1,000) and the rest of what the restore users have;
/// the peak RSS of `snapshot` reading it; then, per source: deactivate,
/// restore, check that Synapse counts every session.
fn restore_big(t: &mut Table, dir: &Path, rounds: usize) {
    let Some(server) = RestoreServer::from_env() else {
        return;
    };
    let sessions = 100_000u64;
    let m = matrix::Matrix::new(&server.url, &server.token);
    let prefix = format!("big{}x", std::process::id());
    let id = format!("@{prefix}0000000:{}", server.server);
    let started = Instant::now();
    // 100,000 sessions in 500 rooms.
    m.seed_all(std::slice::from_ref(&id), sessions, 200);
    eprintln!(
        "  restore_big: {sessions} sessions uploaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    write_input(dir, 1, &server.server, &prefix);
    let (r, sources) = before_images(&server, dir, "big", 1, sessions);
    let mb = r.max_rss_kib as f64 / 1024.0;
    t.row(
        &format!("9. snapshot of one user with {sessions} backup sessions, real Synapse"),
        "peak RSS < 50 MB",
        format!(
            "peak RSS {mb:.1} MB; {:.0} sessions/s ({:.1} s)",
            sessions as f64 / r.wall.as_secs_f64(),
            r.wall.as_secs_f64()
        ),
        mb < 50.0,
    );
    for (label, source) in &sources {
        let ids = std::slice::from_ref(&id);
        let runs = restore_rounds(&server, &m, dir, ids, sessions, source, rounds);
        let rss: Vec<f64> = runs.iter().map(|r| r.max_rss_kib as f64 / 1024.0).collect();
        let keys: Vec<f64> = runs
            .iter()
            .map(|r| sessions as f64 / r.wall.as_secs_f64())
            .collect();
        let mb = median(rss.clone());
        t.row(
            &format!(
                "9. restore of one user with {sessions} backup sessions from {label}, real Synapse (bcrypt_rounds 4), --concurrency 2 --rate 0"
            ),
            "peak RSS < 50 MB",
            format!(
                "peak RSS {mb:.1} MB (runs: {}); {:.0} sessions/s (runs: {})",
                fmt_list(&rss, 1),
                median(keys.clone()),
                fmt_list(&keys, 0)
            ),
            mb < 50.0,
        );
    }
}

/// A small client of a real Synapse for setting up the restore figures:
/// users made as clients make them (as the user, through a puppet token),
/// deactivated by the admin, and read back after a restore.
mod matrix {
    use futures::stream::{self, StreamExt};
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    use reqwest::Method;
    use serde_json::{json, Value};

    /// Global account data every seeded user has, by type (`KEY` stands
    /// for the user's secret storage key ID).
    pub const GLOBAL_DATA: [&str; 12] = [
        "m.direct",
        "m.ignored_user_list",
        "im.vector.setting.breadcrumbs",
        "im.vector.analytics",
        "m.identity_server",
        "io.element.recent_emoji",
        "m.secret_storage.default_key",
        "m.secret_storage.key.KEY",
        "m.cross_signing.master",
        "m.cross_signing.self_signing",
        "m.cross_signing.user_signing",
        "m.megolm_backup.v1",
    ];
    /// Rooms with an item of room account data (`m.marked_unread`). No tags:
    /// Synapse sets them only for a member of the room, and deactivation
    /// keeps them (its `room_tags` table), so a restore has none to give back.
    pub const ROOM_DATA_ROOMS: u64 = 3;
    /// A keyword, a muted room, an override rule; and one default rule
    /// turned off.
    pub const CUSTOM_RULES: u64 = 3;
    pub const CHANGED_DEFAULTS: u64 = 1;
    /// Sessions per upload, as a client pages a large backup.
    const PAGE: u64 = 1000;

    pub struct Matrix {
        rt: tokio::runtime::Runtime,
        http: reqwest::Client,
        base: String,
        admin: String,
    }

    pub fn enc(s: &str) -> String {
        utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
    }

    impl Matrix {
        pub fn new(base: &str, admin: &str) -> Self {
            Matrix {
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime"),
                http: reqwest::Client::new(),
                base: base.trim_end_matches('/').to_owned(),
                admin: admin.to_owned(),
            }
        }

        async fn call(
            &self,
            method: Method,
            path: &str,
            token: &str,
            body: Option<String>,
        ) -> Value {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req.header("content-type", "application/json").body(body);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert!(status.is_success(), "{method} {path}: {status} {text}");
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }

        async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
            self.call(method, path, &self.admin, Some(body.to_string()))
                .await
        }

        async fn login_as(&self, id: &str) -> String {
            let path = format!("/_synapse/admin/v1/users/{}/login", enc(id));
            let v = self.admin(Method::POST, &path, json!({})).await;
            v["access_token"]
                .as_str()
                .expect("an access token")
                .to_owned()
        }

        async fn logout(&self, token: &str) {
            self.call(
                Method::POST,
                "/_matrix/client/v3/logout",
                token,
                Some("{}".into()),
            )
            .await;
        }

        /// Seeds every user, four at a time.
        pub fn seed_all(&self, ids: &[String], sessions: u64, per_room: u64) {
            self.rt.block_on(
                stream::iter(ids.iter().enumerate())
                    .map(|(k, id)| self.seed_user(id, k as u64, sessions, per_room))
                    .buffer_unordered(4)
                    .collect::<Vec<()>>(),
            );
        }

        /// A user with an e-mail and a display name (set by the admin), and,
        /// as the user, account data, push rules and a key backup of
        /// `sessions` sessions, `per_room` to a room.
        async fn seed_user(&self, id: &str, k: u64, sessions: u64, per_room: u64) {
            let e = enc(id);
            let (local, server) = id[1..].split_once(':').expect("a user ID");
            let body = json!({
                "displayname": format!("Bench User {k}"),
                "threepids": [{"medium": "email", "address": format!("{local}@example.org")}],
            });
            self.admin(Method::PUT, &format!("/_synapse/admin/v2/users/{e}"), body)
                .await;
            let token = self.login_as(id).await;
            let put = |path: String, body: Value| {
                let token = token.clone();
                async move {
                    self.call(Method::PUT, &path, &token, Some(body.to_string()))
                        .await
                }
            };
            for kind in GLOBAL_DATA {
                let kind = kind.replace("KEY", &format!("key{k}"));
                let path = format!("/_matrix/client/v3/user/{e}/account_data/{}", enc(&kind));
                put(path, global_data(&kind, k, server)).await;
            }
            for r in 0..ROOM_DATA_ROOMS {
                let room = enc(&format!("!room{r}:{server}"));
                let path = format!(
                    "/_matrix/client/v3/user/{e}/rooms/{room}/account_data/m.marked_unread"
                );
                put(path, json!({"unread": true})).await;
            }
            let rules = "/_matrix/client/v3/pushrules/global";
            put(
                format!("{rules}/content/deploy"),
                json!({"pattern": "deploy", "actions": ["notify", {"set_tweak": "highlight"}]}),
            )
            .await;
            put(
                format!("{rules}/room/{}", enc(&format!("!noisy:{server}"))),
                json!({"actions": []}),
            )
            .await;
            put(
                format!("{rules}/override/mute-announcements"),
                json!({"conditions": [{"kind": "event_match", "key": "room_id",
                    "pattern": format!("!announce:{server}")}], "actions": []}),
            )
            .await;
            put(
                format!("{rules}/override/.m.rule.suppress_notices/enabled"),
                json!({"enabled": false}),
            )
            .await;
            let auth_data = json!({
                "public_key": super::b64(k, 43),
                "signatures": {id: {format!("ed25519:DEVICE{k}"): super::b64(k + 1, 86)}},
            });
            let v = self
                .call(
                    Method::POST,
                    "/_matrix/client/v3/room_keys/version",
                    &token,
                    Some(
                        json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": auth_data})
                            .to_string(),
                    ),
                )
                .await;
            let version = v["version"].as_str().expect("a backup version").to_owned();
            let mut from = 0;
            while from < sessions {
                let to = (from + PAGE).min(sessions);
                let body = super::backup_keys(local, server, from..to, per_room);
                let path = format!("/_matrix/client/v3/room_keys/keys?version={version}");
                self.call(Method::PUT, &path, &token, Some(body)).await;
                from = to;
            }
            self.logout(&token).await;
        }

        /// Deactivates every user, without erasing, four at a time.
        pub fn deactivate_all(&self, ids: &[String]) {
            self.rt.block_on(
                stream::iter(ids)
                    .map(|id| async move {
                        let path = format!("/_synapse/admin/v1/deactivate/{}", enc(id));
                        self.admin(Method::POST, &path, json!({"erase": false}))
                            .await;
                    })
                    .buffer_unordered(4)
                    .collect::<Vec<()>>(),
            );
        }

        /// Reads a restored user back from Synapse as the user: the backup
        /// counts every session, the DM list and a push rule are as seeded.
        pub fn verify_user(&self, id: &str, k: u64, sessions: u64) {
            self.rt.block_on(async {
                let server = id.split_once(':').expect("a user ID").1;
                let token = self.login_as(id).await;
                let get = |path: String| {
                    let token = token.clone();
                    async move { self.call(Method::GET, &path, &token, None).await }
                };
                let backup = get("/_matrix/client/v3/room_keys/version".into()).await;
                assert_eq!(
                    backup["count"],
                    json!(sessions),
                    "{id}: sessions in the backup"
                );
                let direct = get(format!(
                    "/_matrix/client/v3/user/{}/account_data/m.direct",
                    enc(id)
                ))
                .await;
                assert_eq!(direct, global_data("m.direct", k, server), "{id}: m.direct");
                let rule = get("/_matrix/client/v3/pushrules/global/content/deploy".into()).await;
                assert_eq!(rule["pattern"], json!("deploy"), "{id}: the keyword rule");
                self.logout(&token).await;
            });
        }
    }

    /// The content of one item of global account data, as Element writes it.
    fn global_data(kind: &str, k: u64, server: &str) -> Value {
        let b64 = super::b64;
        let secret = |seed: u64| {
            json!({"encrypted": {format!("key{k}"): {
                "iv": b64(seed, 22), "ciphertext": b64(seed + 1, 64), "mac": b64(seed + 2, 43)}}})
        };
        match kind {
            "m.direct" => (0..6)
                .map(|f| {
                    (
                        format!("@friend{f}:{server}"),
                        json!([format!("!dm{k}x{f}:{server}")]),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
            "m.ignored_user_list" => json!({"ignored_users": {
                format!("@spam1:{server}"): {}, format!("@spam2:{server}"): {}}}),
            "im.vector.setting.breadcrumbs" => json!({"recent_rooms":
                (0..5).map(|r| format!("!room{r}:{server}")).collect::<Vec<_>>()}),
            "im.vector.analytics" => json!({"pseudonymousAnalyticsOptIn": false}),
            "m.identity_server" => json!({"base_url": null}),
            "io.element.recent_emoji" => json!({"recent_emoji": [["👍", 12], ["😂", 4]]}),
            "m.secret_storage.default_key" => json!({"key": format!("key{k}")}),
            "m.cross_signing.master" => secret(k * 100),
            "m.cross_signing.self_signing" => secret(k * 100 + 10),
            "m.cross_signing.user_signing" => secret(k * 100 + 20),
            "m.megolm_backup.v1" => secret(k * 100 + 30),
            // m.secret_storage.key.<id>
            _ => json!({"algorithm": "m.secret_storage.v1.aes-hmac-sha2",
                "iv": b64(k, 22), "mac": b64(k + 1, 43),
                "passphrase": {"algorithm": "m.pbkdf2", "iterations": 500000, "salt": b64(k + 2, 32)}}),
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
    if want("snapshot_many") {
        snapshot_many(&mut t, &url, &mock, &dir, rounds);
    }
    if want("restore") {
        restore(&mut t, &dir, rounds);
    }
    if want("restore_big") {
        restore_big(&mut t, &dir, rounds);
    }
    if want("seal") {
        seal_mock(&mut t, &url, &mock, &dir, rounds);
    }
    if want("seal-synapse") {
        seal_synapse(&mut t, &dir, rounds);
    }
    if want("auto") {
        auto(&mut t, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
