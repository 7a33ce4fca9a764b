//! The promise of `--restore-from`, kept with a real Matrix client: a user who
//! set up recovery and key backup with matrix-sdk (the library of Element X)
//! is deactivated by mistake, given back from a `snapshot`, and on a brand-new
//! device recovers with the recovery key they kept and decrypts a message they
//! sent before the deactivation.
//!
//! Everything the user does goes through matrix-sdk as a client would (login,
//! cross-signing, recovery, encrypted messages, backup download); only the
//! scenario (creating users, the mistaken deactivation) uses the admin API,
//! and a copy of the database taken with the snapshot shows what the user's
//! recovery setup was, so the test can tell that deactivation deleted it and
//! the run gave it back.
//! Every wait has a deadline, so a stuck server or client fails the test with
//! a message instead of hanging the run.

use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::path::Path;
use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::encryption::backups::BackupState;
use matrix_sdk::encryption::recovery::RecoveryState;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt};
use matrix_sdk::{Client, Room};

use reqwest::Method;

use crate::support::mock_synapse::enc;
use crate::support::real_synapse::{sqlite_path, synapse, tag, Synapse};
use crate::support::rich_account::{backup_sqlite, backups_sqlite};
use crate::support::workdir::{by_user, run, stderr, Workdir};

/// Deadline of one step (a login, a sync, a backup upload, a tool run).
const STEP: Duration = Duration::from_secs(120);

/// Awaits `what` with the step deadline; fails the test with its name on an
/// error or when it is late.
async fn step<T, E: std::fmt::Debug>(what: &str, fut: impl IntoFuture<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP, fut.into_future()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e:?}"),
        Err(_) => panic!("{what}: not done after {STEP:?}"),
    }
}

/// Polls `check` until it holds; fails with `what` after the step deadline.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not so after {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One logged-in device of a user, syncing in the background as a client
/// app does (room keys, backups and membership all travel through sync).
struct Device {
    client: Client,
    sync: tokio::task::JoinHandle<()>,
}

impl Device {
    /// Logs `user` in on a new device with a fresh in-memory store and starts
    /// its sync loop once the first sync is in.
    async fn login(url: &str, user: &str, password: &str, name: &str) -> Device {
        let client = step(
            "build a matrix-sdk client",
            Client::builder().homeserver_url(url).build(),
        )
        .await;
        step(
            &format!("log {user} in on {name}"),
            client
                .matrix_auth()
                .login_username(user, password)
                .initial_device_display_name(name),
        )
        .await;
        step(
            &format!("first sync of {user} on {name}"),
            client.sync_once(SyncSettings::default()),
        )
        .await;
        let looping = client.clone();
        let sync = tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_secs(5));
            if let Err(e) = looping.sync(settings).await {
                eprintln!("sync loop ended: {e:?}");
            }
        });
        Device { client, sync }
    }

    fn user(&self) -> OwnedUserId {
        self.client
            .user_id()
            .expect("a logged-in client")
            .to_owned()
    }

    /// The room as this device knows it, once its sync has brought it.
    async fn room(&self, id: &RoomId) -> Room {
        let client = &self.client;
        until(
            &format!("{id} appears in {}'s sync", self.user()),
            || async { client.get_room(id).is_some() },
        )
        .await;
        client.get_room(id).expect("the room, just seen")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

/// Uploads a cross-signing identity for `device`: without user-interactive
/// auth where the server allows a first upload so, else with the password.
async fn bootstrap_cross_signing(device: &Device, password: &str) {
    let encryption = device.client.encryption();
    let Err(first) = encryption.bootstrap_cross_signing(None).await else {
        return;
    };
    let uiaa = first
        .as_uiaa_response()
        .unwrap_or_else(|| panic!("bootstrap cross-signing: {first:?}"));
    let user =
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(device.user().to_string()));
    let mut auth = uiaa::Password::new(user, password.to_owned());
    auth.session = uiaa.session.clone();
    step(
        "bootstrap cross-signing with the password",
        encryption.bootstrap_cross_signing(Some(uiaa::AuthData::Password(auth))),
    )
    .await;
}

/// An encrypted private room of `owner` with `guests` invited.
async fn encrypted_room(owner: &Device, guests: Vec<OwnedUserId>) -> OwnedRoomId {
    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = guests;
    request.initial_state = vec![InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()];
    let room = step(
        "create the encrypted room",
        owner.client.create_room(request),
    )
    .await;
    room.room_id().to_owned()
}

/// The body of a decrypted text message, `None` for anything else (state,
/// membership, or an event that could not be decrypted).
fn decrypted_body(event: &TimelineEvent) -> Option<String> {
    // Only an event that was encrypted and is now decrypted counts.
    event.encryption_info()?;
    let json: serde_json::Value = serde_json::from_str(event.raw().json().get()).ok()?;
    json["content"]["body"].as_str().map(str::to_owned)
}

/// Pages back through `room` and returns, for each of `wanted`, the body
/// this device decrypted for it (`None` where it could not).
async fn read_history(room: &Room, wanted: &[OwnedEventId]) -> Vec<Option<String>> {
    let mut found: Vec<Option<Option<String>>> = vec![None; wanted.len()];
    let mut from = None;
    for _ in 0..20 {
        let mut options = MessagesOptions::backward();
        options.from = from.clone();
        options.limit = UInt::from(50u32);
        let page = step("page back through the room", room.messages(options)).await;
        for event in &page.chunk {
            if let Some(i) = wanted
                .iter()
                .position(|w| Some(w) == event.event_id().as_ref())
            {
                found[i] = Some(decrypted_body(event));
            }
        }
        if found.iter().all(Option::is_some) || page.end.is_none() {
            break;
        }
        from = page.end;
    }
    found
        .into_iter()
        .zip(wanted)
        .map(|(f, id)| f.unwrap_or_else(|| panic!("{id} is not in the room's history")))
        .collect()
}

/// The admin's user ID, as the server knows the admin token.
async fn admin_id(s: &Synapse) -> OwnedUserId {
    let path = "/_matrix/client/v3/account/whoami";
    let (status, v) = s.request(None, Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v["user_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no user ID in {v}"))
}

/// What the user does before the mistake: recovery and key backup set up,
/// an encrypted room with `bob`, messages sent and backed up. Returns the
/// recovery key, the room and the messages (event and body).
async fn use_encryption(
    s: &Synapse,
    alice: &Device,
    password: &str,
    bob: &Device,
) -> (String, OwnedRoomId, Vec<(OwnedEventId, String)>) {
    bootstrap_cross_signing(alice, password).await;
    let recovery = alice.client.encryption().recovery();
    let key = step(
        "enable recovery",
        recovery.enable().wait_for_backups_to_upload(),
    )
    .await;
    assert_eq!(recovery.state(), RecoveryState::Enabled);
    assert_eq!(
        alice.client.encryption().backups().state(),
        BackupState::Enabled
    );

    let room_id = encrypted_room(alice, vec![bob.user(), admin_id(s).await]).await;
    // The admin is a member so that the tool can join the user back to this
    // invite-only room (any member may invite here).
    s.room_action(&s.token, room_id.as_str(), "join", None)
        .await;
    step("bob joins", bob.client.join_room_by_id(&room_id)).await;
    let room = alice.room(&room_id).await;
    let bob_id = bob.user();
    until("alice sees bob joined", || async {
        let member = room.get_member(&bob_id).await;
        matches!(member, Ok(Some(m)) if m.membership() == &MembershipState::Join)
    })
    .await;

    let mut sent = vec![];
    for n in 1..=3 {
        let body = format!("secret {n} of {} before the mistake", alice.user());
        let response = step(
            "send an encrypted message",
            room.send(RoomMessageEventContent::text_plain(&body)),
        )
        .await;
        sent.push((response.response.event_id, body));
    }
    step(
        "back up the room keys",
        alice.client.encryption().backups().wait_for_steady_state(),
    )
    .await;
    (key, room_id, sent)
}

/// A new device of the user recovers with `key` and reads `sent` back.
async fn recover_and_read(
    url: &str,
    user: &str,
    password: &str,
    key: &str,
    room_id: &RoomId,
    sent: &[(OwnedEventId, String)],
) {
    let device = Device::login(url, user, password, "new phone").await;
    let recovery = device.client.encryption().recovery();
    // A wrong key opens nothing.
    let wrong = "EsTj 3yST y93F SLpB jJsz eAXc 2XzA ygD3 w69H fGaN TKBj jXEd";
    assert!(
        recovery.recover(wrong).await.is_err(),
        "a wrong recovery key must not open the secret storage"
    );
    step("recover with the recovery key", recovery.recover(key)).await;
    assert_eq!(recovery.state(), RecoveryState::Enabled, "recovery state");
    until("backups enabled after recovery", || async {
        device.client.encryption().backups().state() == BackupState::Enabled
    })
    .await;
    let room = device.room(room_id).await;
    step(
        "download the room's keys from the backup",
        device
            .client
            .encryption()
            .backups()
            .download_room_keys_for_room(room_id),
    )
    .await;
    let wanted: Vec<OwnedEventId> = sent.iter().map(|(id, _)| id.clone()).collect();
    let bodies = read_history(&room, &wanted).await;
    for ((id, body), got) in sent.iter().zip(bodies) {
        assert_eq!(
            got.as_deref(),
            Some(body.as_str()),
            "{id} decrypted on the new device"
        );
    }
}

/// The global account data types `user` holds in the SQLite database `db`.
fn account_data_types(db: &Path, user: &str) -> BTreeSet<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut query = conn
        .prepare("SELECT account_data_type FROM account_data WHERE user_id = ?1")
        .expect("a query on account_data");
    let rows = query
        .query_map([user], |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("account data of {user} in {}: {e}", db.display()));
    rows.map(|r| r.expect("an account data type")).collect()
}

/// The types of account data that hold the user's recovery setup: the
/// secret storage key and its default, the cross-signing private keys and
/// the backup key, each encrypted with the recovery key.
fn recovery_types(all: &BTreeSet<String>) -> BTreeSet<String> {
    all.iter()
        .filter(|t| {
            t.starts_with("m.secret_storage.")
                || t.starts_with("m.cross_signing.")
                || t.starts_with("m.megolm_backup.")
        })
        .cloned()
        .collect()
}

/// The before-image, taken by `matrix-reactivate snapshot` (what `--restore-from`
/// reads here) next to a copy of the database (what the check below reads).
async fn before_image(s: &Synapse, w: &Workdir, user: &str) -> (BTreeSet<String>, u64) {
    w.write("users.csv", format!("user_id\n{user}\n"));
    let copy = w.path("homeserver-copy.db");
    backup_sqlite(&sqlite_path(), &copy);
    let mut snapshot = w.cmd();
    snapshot
        .env("MATRIX_ADMIN_TOKEN", &s.token)
        .args(["snapshot", "-H", &s.url, "users.csv", "-o", "before.snap"])
        .args(["--no-progress", "--rate", "0"])
        .timeout(STEP);
    let out = run(snapshot).await;
    assert_eq!(out.status.code(), Some(0), "snapshot: {}", stderr(&out));

    let types = recovery_types(&account_data_types(&copy, user));
    for wanted in [
        "m.secret_storage.default_key",
        "m.cross_signing.master",
        "m.cross_signing.self_signing",
        "m.cross_signing.user_signing",
        "m.megolm_backup.v1",
    ] {
        assert!(types.contains(wanted), "{user} set up {wanted}: {types:?}");
    }
    let (versions, sessions) = backups_sqlite(&copy, user);
    assert_eq!(
        versions, 1,
        "{user} has one backup version before the mistake"
    );
    assert!(sessions > 0, "{user}'s room keys are in the backup");
    (types, sessions)
}

/// The global account data types the admin API shows for `user` now.
async fn account_data_now(s: &Synapse, user: &str) -> BTreeSet<String> {
    let path = format!("/_synapse/admin/v1/users/{}/accountdata", enc(user));
    let (status, v) = s.request(None, Method::GET, &path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v["account_data"]["global"]
        .as_object()
        .unwrap_or_else(|| panic!("GET {path}: no global account data in {v}"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_synapse_recovery_key_reads_history_after_restore() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let (alice_id, bob_id) = (s.id(&format!("alice_{t}")), s.id(&format!("bob_{t}")));
    let (alice_pw, bob_pw) = (format!("pw-alice-{t}"), format!("pw-bob-{t}"));
    s.create(&alice_id, &alice_pw).await;
    s.create(&bob_id, &bob_pw).await;

    // Alice sets up recovery and writes to Bob, end-to-end encrypted.
    let alice = Device::login(&s.url, &alice_id, &alice_pw, "first phone").await;
    let bob = Device::login(&s.url, &bob_id, &bob_pw, "bob's phone").await;
    let (key, room_id, sent) = use_encryption(&s, &alice, &alice_pw, &bob).await;
    drop(alice);

    let w = Workdir::new();
    let (types, sessions) = before_image(&s, &w, &alice_id).await;

    // The mistake. Her recovery setup and her backup are gone with it: the
    // recovery key she kept opens nothing now.
    s.deactivate(&alice_id, false).await;
    s.wait_until_parted(&alice_id).await;
    let left = recovery_types(&account_data_now(&s, &alice_id).await);
    assert!(
        left.is_empty(),
        "deactivation deleted {types:?}, left {left:?}"
    );
    let (_, sessions_left) = backups_sqlite(&sqlite_path(), &alice_id);
    assert_eq!(sessions_left, 0, "deactivation deleted the backup");

    let mut restore = s.tool(
        &w,
        "users.csv",
        "results.csv",
        &["--restore-from", "before.snap", "--rate", "0"],
    );
    restore.timeout(STEP);
    let out = run(restore).await;
    assert_eq!(out.status.code(), Some(0), "restore: {}", stderr(&out));
    let rows = by_user(&w.results("results.csv"));
    let row = &rows[&alice_id];
    assert_eq!(row.status, "reactivated", "{row:?}");
    assert!(row.error.is_empty(), "nothing kept or failed: {row:?}");
    let restored: BTreeSet<&str> = row.restored.split(';').collect();
    let backup_keys = format!("backup_keys:{sessions}");
    assert!(restored.contains(backup_keys.as_str()), "{row:?}");
    assert!(restored.contains("rooms:1"), "back in the room: {row:?}");
    let now = account_data_now(&s, &alice_id).await;
    assert!(
        types.is_subset(&now),
        "recovery setup given back: {types:?} in {now:?}"
    );

    // A new device, the new password, the recovery key she kept.
    recover_and_read(&s.url, &alice_id, &row.password, &key, &room_id, &sent).await;
    drop(bob);
}
