//! Property tests of the state machine's rules and of command encoding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use omega_consensus::command::{Command, JobOutcome, Rejection, Response};
use omega_consensus::model::{ItemKind, ItemWrite, JobState, LibraryAccess, LibraryKind, Role};
use omega_consensus::state_machine::read;
use omega_consensus::state_machine::rules::apply_command;
use omega_consensus::state_machine::tables::{MemTables, Overlay};
use proptest::prelude::*;

/// Applies one command at `index` and commits it to `tables`.
fn apply(tables: &mut MemTables, index: u64, command: &Command) -> Response {
    let mut overlay = Overlay::new(&*tables);
    let response = apply_command(&mut overlay, index, command).unwrap();
    let writes = overlay.into_writes();
    if matches!(response, Response::Rejected(_)) {
        assert!(writes.is_empty(), "a refused command wrote {writes:?}");
    }
    tables.apply(writes);
    response
}

fn create_user(name: &str) -> Command {
    Command::CreateUser {
        name: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: BTreeSet::from([Role::Viewer]),
        library_access: LibraryAccess::All,
        now_ms: 1,
    }
}

fn item(key: &str, library: u64, parent: Option<&str>) -> ItemWrite {
    ItemWrite {
        key: key.into(),
        library,
        kind: ItemKind::Movie,
        parent_key: parent.map(Into::into),
        title: key.into(),
        sort_title: key.into(),
        year: None,
        index: None,
        metadata: BTreeMap::new(),
        media: Vec::new(),
    }
}

/// Sets up one library with one item and returns the item's id.
fn library_with_item(tables: &mut MemTables) -> u64 {
    let Response::Created(library) = apply(
        tables,
        1,
        &Command::CreateLibrary {
            name: "Films".into(),
            kind: LibraryKind::Movies,
            paths: vec!["/media/films".into()],
            node: 1,
            now_ms: 0,
        },
    ) else {
        panic!("library not created")
    };
    let Response::Items(ids) = apply(
        tables,
        2,
        &Command::UpsertItems {
            items: vec![item("/media/films/a.mkv", library, None)],
            now_ms: 0,
        },
    ) else {
        panic!("item not created")
    };
    ids[0]
}

proptest! {
    /// Names are unique case-insensitively: a create succeeds exactly when
    /// no user has the name in any case.
    #[test]
    fn user_names_are_unique(names in prop::collection::vec("[aAbB]{1,3}", 1..40)) {
        let mut tables = MemTables::default();
        let mut taken = BTreeSet::new();
        for (index, name) in names.iter().enumerate() {
            let response = apply(&mut tables, index as u64 + 1, &create_user(name));
            if taken.insert(name.to_lowercase()) {
                prop_assert!(matches!(response, Response::Created(_)), "{name}: {response:?}");
            } else {
                prop_assert_eq!(response, Response::Rejected(Rejection::NameTaken(name.clone())));
            }
        }
        let users = read::users(&tables).unwrap();
        prop_assert_eq!(users.len(), taken.len());
        for user in users {
            prop_assert_eq!(read::user_by_name(&tables, &user.name.to_uppercase()).unwrap().map(|found| found.id), Some(user.id));
        }
    }

    /// Jobs move only along legal transitions; at any time at most one
    /// lease is valid, its fencing token is the index of the claim that
    /// granted it, and only that token renews or finishes the job.
    #[test]
    fn jobs_follow_their_lease_rules(ops in prop::collection::vec((0_u8..4, 1_u64..4, 0_u64..30, 0_usize..6), 1..80)) {
        let mut tables = MemTables::default();
        let item = library_with_item(&mut tables);
        let Response::Created(job) = apply(&mut tables, 3, &Command::EnqueueJob { item, profile: "720p".into(), now_ms: 0 }) else {
            panic!("job not created")
        };
        let mut now = 0_u64;
        let mut issued: Vec<u64> = vec![0];
        // The model: the current lease (fencing, holder, expiry) or a terminal state.
        let mut lease: Option<(u64, u64, u64)> = None;
        let mut terminal = false;
        for (step, (op, node, advance, pick)) in ops.into_iter().enumerate() {
            let index = 10 + step as u64;
            now += advance;
            let fencing = issued[pick % issued.len()];
            let valid = |lease: Option<(u64, u64, u64)>| lease.filter(|(_, _, expires)| *expires > now);
            let command = match op {
                0 => Command::ClaimJob { job, node, now_ms: now, lease_ms: 10 },
                1 => Command::RenewLease { job, fencing, now_ms: now, lease_ms: 10 },
                2 => Command::FinishJob { job, fencing, outcome: JobOutcome::Released, now_ms: now },
                _ => Command::FinishJob { job, fencing, outcome: JobOutcome::Done { output: None }, now_ms: now },
            };
            let response = apply(&mut tables, index, &command);
            let expected_ok = match op {
                0 => !terminal && valid(lease).is_none(),
                _ => !terminal && valid(lease).is_some_and(|(current, _, _)| current == fencing),
            };
            prop_assert_eq!(!matches!(response, Response::Rejected(_)), expected_ok, "step {}: {:?} -> {:?}", step, command, response);
            if expected_ok {
                match op {
                    0 => {
                        prop_assert_eq!(&response, &Response::Lease { fencing: index, expires_ms: now + 10 });
                        issued.push(index);
                        lease = Some((index, node, now + 10));
                    }
                    1 => lease = lease.map(|(current, holder, _)| (current, holder, now + 10)),
                    2 => lease = None,
                    _ => { lease = None; terminal = true; }
                }
            }
            let state = read::job(&tables, job).unwrap().unwrap().state;
            match (&state, lease, terminal) {
                (JobState::Done { .. }, None, true) | (JobState::Queued, None, false) => {}
                (JobState::Leased { fencing, node, expires_ms }, Some(model), false) => {
                    prop_assert_eq!((*fencing, *node, *expires_ms), model);
                }
                other => prop_assert!(false, "state {:?} disagrees with the model {:?}", other.0, other.1),
            }
        }
    }

    /// Every command survives a postcard round trip.
    #[test]
    fn commands_round_trip(name in ".{0,40}", id in any::<u64>(), now in any::<u64>(), hash in any::<[u8; 32]>(), secret in prop::option::of(prop::option::of(prop::collection::vec(any::<u8>(), 0..40)))) {
        let commands = vec![
            Command::Noop,
            Command::ConsumeJoinToken { token_id: [7; 16], expires_ms: now, now_ms: id },
            create_user(&name),
            Command::UpdateUser { id, password_hash: Some(name.clone()), roles: None, library_access: Some(LibraryAccess::Only(BTreeSet::from([id]))), totp_secret: secret },
            Command::DeleteUser { id },
            Command::PutRefreshToken { hash, user: id, expires_ms: now },
            Command::RevokeRefreshToken { hash },
            Command::PutApiKey { hash, user: id, name: name.clone(), now_ms: now },
            Command::RevokeApiKey { hash },
            Command::CreateLibrary { name: name.clone(), kind: LibraryKind::Music, paths: vec![name.clone()], node: id, now_ms: now },
            Command::DeleteLibrary { id },
            Command::UpsertItems { items: vec![item(&name, id, Some(&name))], now_ms: now },
            Command::RemoveItems { keys: vec![name.clone()] },
            Command::EnqueueJob { item: id, profile: name.clone(), now_ms: now },
            Command::ClaimJob { job: id, node: id, now_ms: now, lease_ms: id },
            Command::RenewLease { job: id, fencing: id, now_ms: now, lease_ms: id },
            Command::FinishJob { job: id, fencing: id, outcome: JobOutcome::Failed { reason: name.clone() }, now_ms: now },
            Command::RevokeCertificate { fingerprint: name.clone(), node: id },
            Command::CreateFirstAdmin { name: name.clone(), password_hash: name.clone(), now_ms: now },
            Command::RotateRefreshToken { old: hash, new: [3; 32], expires_ms: now, now_ms: id },
        ];
        for command in commands {
            let bytes = postcard::to_stdvec(&command).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), command);
        }
    }

    /// Garbage never decodes into a panic.
    #[test]
    fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = postcard::from_bytes::<Command>(&bytes);
    }
}

/// The encoding is a log format: variants keep their positions. A change
/// here is a change of the on-disk and wire format.
#[test]
fn command_encoding_is_stable() {
    assert_eq!(postcard::to_stdvec(&Command::Noop).unwrap(), [0]);
    assert_eq!(postcard::to_stdvec(&Command::DeleteUser { id: 5 }).unwrap(), [4, 5]);
    assert_eq!(
        postcard::to_stdvec(&Command::ClaimJob {
            job: 1,
            node: 2,
            now_ms: 3,
            lease_ms: 4
        })
        .unwrap(),
        [15, 1, 2, 3, 4]
    );
    assert_eq!(
        postcard::to_stdvec(&Command::FinishJob {
            job: 1,
            fencing: 2,
            outcome: JobOutcome::Released,
            now_ms: 3
        })
        .unwrap(),
        [17, 1, 2, 2, 3]
    );
    // An unknown variant (from a newer node) is an error, not a panic.
    assert!(postcard::from_bytes::<Command>(&[200]).is_err());
}

#[test]
fn only_the_first_user_comes_from_setup() {
    let mut tables = MemTables::default();
    let setup = |name: &str| Command::CreateFirstAdmin {
        name: name.into(),
        password_hash: "hash".into(),
        now_ms: 1,
    };
    let Response::Created(id) = apply(&mut tables, 1, &setup("root")) else {
        panic!("the first setup creates the administrator");
    };
    let user = read::user(&tables, id).unwrap().unwrap();
    assert!(user.roles.contains(&Role::Admin));
    assert!(matches!(
        apply(&mut tables, 2, &setup("intruder")),
        Response::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(read::users(&tables).unwrap().len(), 1);
}

#[test]
fn join_tokens_admit_one_node_before_they_expire() {
    let mut tables = MemTables::default();
    let token = Command::ConsumeJoinToken {
        token_id: [1; 16],
        expires_ms: 100,
        now_ms: 50,
    };
    assert_eq!(apply(&mut tables, 7, &token), Response::NodeId(7));
    assert_eq!(apply(&mut tables, 8, &token), Response::Rejected(Rejection::TokenUsed));
    let late = Command::ConsumeJoinToken {
        token_id: [2; 16],
        expires_ms: 100,
        now_ms: 100,
    };
    assert_eq!(
        apply(&mut tables, 9, &late),
        Response::Rejected(Rejection::TokenExpired)
    );
}

#[test]
fn upserts_by_key_keep_ids_and_link_parents() {
    let mut tables = MemTables::default();
    let _ = library_with_item(&mut tables);
    let library = read::libraries(&tables).unwrap()[0].id;
    let mut series = item("show", library, None);
    series.kind = ItemKind::Series;
    let mut episode = item("show/s01e01.mkv", library, Some("show"));
    episode.kind = ItemKind::Episode;
    let Response::Items(first) = apply(
        &mut tables,
        5,
        &Command::UpsertItems {
            items: vec![series.clone(), episode.clone()],
            now_ms: 1,
        },
    ) else {
        panic!()
    };
    episode.title = "Pilot".into();
    let Response::Items(second) = apply(
        &mut tables,
        6,
        &Command::UpsertItems {
            items: vec![episode],
            now_ms: 2,
        },
    ) else {
        panic!()
    };
    assert_eq!(first[1], second[0]);
    let stored = read::item(&tables, second[0]).unwrap().unwrap();
    assert_eq!(
        (
            stored.fields.title.as_str(),
            stored.parent,
            stored.added_ms,
            stored.updated_ms
        ),
        ("Pilot", Some(first[0]), 1, 2)
    );
    assert_eq!(
        omega_consensus::state_machine::rules::children(&tables, first[0]).unwrap(),
        vec![second[0]]
    );
    // A missing parent refuses the whole batch.
    let orphan = item("other/e.mkv", library, Some("other"));
    assert!(matches!(
        apply(
            &mut tables,
            7,
            &Command::UpsertItems {
                items: vec![orphan],
                now_ms: 3
            }
        ),
        Response::Rejected(Rejection::NotFound { .. })
    ));
}

proptest! {
    /// Playlists change only through their owner; names are checked; the
    /// table matches a model of what was accepted.
    #[test]
    fn playlists_change_only_through_their_owner(ops in prop::collection::vec((0_u8..3, 0_usize..2, 0_usize..4, "[a-c ]{0,3}", prop::collection::vec(0_u64..3, 0..4)), 1..60)) {
        let mut tables = MemTables::default();
        let users: Vec<u64> = ["ann", "bob"]
            .iter()
            .enumerate()
            .map(|(index, name)| match apply(&mut tables, index as u64 + 1, &create_user(name)) {
                Response::Created(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        // Model: id → (owner, name, items).
        let mut model: BTreeMap<u64, (u64, String, Vec<u64>)> = BTreeMap::new();
        let mut created: Vec<u64> = Vec::new();
        for (step, (op, who, pick, name, items)) in ops.into_iter().enumerate() {
            let index = 10 + step as u64;
            let owner = users[who];
            let valid_name = !name.trim().is_empty();
            match op {
                0 => {
                    let response = apply(&mut tables, index, &Command::CreatePlaylist { owner, name: name.clone(), items: items.clone(), public: false, now_ms: 0 });
                    if valid_name {
                        let Response::Created(id) = response else { panic!("{response:?}") };
                        model.insert(id, (owner, name.trim().to_owned(), items));
                        created.push(id);
                    } else {
                        prop_assert!(matches!(response, Response::Rejected(Rejection::Invalid(_))), "{response:?}");
                    }
                }
                1 if !created.is_empty() => {
                    let id = created[pick % created.len()];
                    let response = apply(&mut tables, index, &Command::UpdatePlaylist { id, owner, name: Some(name.clone()), items: Some(items.clone()), public: None, now_ms: 1 });
                    let allowed = model.get(&id).is_some_and(|(holder, _, _)| *holder == owner);
                    if allowed && valid_name {
                        prop_assert_eq!(&response, &Response::Done);
                        model.insert(id, (owner, name.trim().to_owned(), items));
                    } else {
                        prop_assert!(matches!(response, Response::Rejected(_)), "{response:?}");
                    }
                }
                2 if !created.is_empty() => {
                    let id = created[pick % created.len()];
                    let response = apply(&mut tables, index, &Command::DeletePlaylist { id, owner });
                    if model.get(&id).is_some_and(|(holder, _, _)| *holder == owner) {
                        prop_assert_eq!(&response, &Response::Done);
                        model.remove(&id);
                    } else {
                        prop_assert!(matches!(response, Response::Rejected(Rejection::NotFound { .. })), "{response:?}");
                    }
                }
                _ => {}
            }
        }
        let stored: BTreeMap<u64, (u64, String, Vec<u64>)> = read::playlists(&tables)
            .unwrap()
            .into_iter()
            .map(|playlist| (playlist.id, (playlist.owner, playlist.name, playlist.items)))
            .collect();
        prop_assert_eq!(stored, model);
    }

    /// Favourites are a set per user: marking twice keeps one mark (and
    /// its first time), unmarking removes it; app passwords are capped per
    /// user and their ids are not reused.
    #[test]
    fn favourites_are_sets_and_app_passwords_are_capped(marks in prop::collection::vec(any::<bool>(), 1..20), passwords in 1_usize..40) {
        let mut tables = MemTables::default();
        let Response::Created(user) = apply(&mut tables, 1, &create_user("ann")) else { panic!() };
        let item = library_with_item(&mut tables);
        let mut marked = false;
        for (step, favorite) in marks.into_iter().enumerate() {
            let response = apply(&mut tables, 10 + step as u64, &Command::SetFavorite { user, item, favorite, now_ms: step as u64 });
            prop_assert_eq!(response, Response::Done);
            let since = read::favorite(&tables, user, item).unwrap().map(|mark| mark.since_ms);
            if favorite && !marked {
                prop_assert_eq!(since, Some(step as u64));
            }
            marked = favorite;
            prop_assert_eq!(since.is_some(), marked);
        }
        for id in 0..passwords as u64 {
            let response = apply(&mut tables, 100 + id, &Command::PutAppPassword { user, id, name: format!("p{id}"), sealed: vec![1, 2, 3], now_ms: 0 });
            if (id as usize) < omega_consensus::model::APP_PASSWORDS_MAX {
                prop_assert_eq!(response, Response::Created(id));
            } else {
                prop_assert!(matches!(response, Response::Rejected(Rejection::Quota(_))));
            }
        }
        let again = apply(&mut tables, 999, &Command::PutAppPassword { user, id: 0, name: "again".into(), sealed: vec![], now_ms: 0 });
        prop_assert!(matches!(again, Response::Rejected(Rejection::Invalid(_))), "an id is not reused");
        prop_assert_eq!(read::app_passwords(&tables, user).unwrap().len(), passwords.min(omega_consensus::model::APP_PASSWORDS_MAX));
    }
}

/// The job table is bounded: a full table forgets its oldest finished job
/// to take a new one, and refuses the new one when none has finished.
#[test]
fn a_full_job_table_forgets_its_oldest_finished_job_or_refuses() {
    use omega_consensus::codec::{encode, id_key};
    use omega_consensus::model::{JOBS_MAX, Job};
    use omega_consensus::state_machine::tables::Table;

    let mut tables = MemTables::default();
    let item = library_with_item(&mut tables);
    // Fill the table to one short of the cap directly: enqueueing them one
    // by one would scan the table each time.
    let first = 1_000_u64;
    let job = |id: u64, state: JobState| Job {
        id,
        item,
        profile: "720p".into(),
        state,
        attempts: 1,
        created_ms: id,
    };
    let failed = JobState::Failed {
        reason: "test".into(),
        finished_ms: 1,
    };
    for id in first..first + JOBS_MAX as u64 - 1 {
        // Every other job is still queued.
        let state = if id % 2 == 0 { failed.clone() } else { JobState::Queued };
        tables.insert(Table::Jobs, id_key(id).to_vec(), encode(&job(id, state)));
    }
    tables.insert(
        Table::Meta,
        omega_consensus::state_machine::rules::NEXT_ID_KEY.to_vec(),
        encode(&(first + JOBS_MAX as u64)),
    );
    let enqueue = Command::EnqueueJob {
        item,
        profile: "720p".into(),
        now_ms: 5,
    };
    // One more fits.
    assert!(matches!(apply(&mut tables, 10, &enqueue), Response::Created(_)));
    assert_eq!(read::jobs(&tables).unwrap().len(), JOBS_MAX);
    // Past the cap, the oldest finished job goes; queued ones stay.
    assert!(matches!(apply(&mut tables, 11, &enqueue), Response::Created(_)));
    let jobs = read::jobs(&tables).unwrap();
    assert_eq!(jobs.len(), JOBS_MAX);
    assert!(
        !jobs.iter().any(|job| job.id == first),
        "the oldest finished job is forgotten"
    );
    assert!(jobs.iter().any(|job| job.id == first + 1), "an older queued job stays");
    // With nothing finished left, a new job is refused.
    for job in read::jobs(&tables).unwrap() {
        if job.state.is_finished() {
            tables.insert(
                Table::Jobs,
                id_key(job.id).to_vec(),
                encode(&Job {
                    state: JobState::Queued,
                    ..job
                }),
            );
        }
    }
    assert!(matches!(
        apply(&mut tables, 12, &enqueue),
        Response::Rejected(Rejection::Full(_))
    ));
    assert_eq!(read::jobs(&tables).unwrap().len(), JOBS_MAX);
    // A table past the cap (from an older version) with too few finished
    // jobs to come back under it: refused, and nothing is forgotten (the
    // helper checks a refusal writes nothing).
    let finished = JobState::Done {
        node: 1,
        output: None,
        finished_ms: 1,
    };
    tables.insert(
        Table::Jobs,
        id_key(first + 1).to_vec(),
        encode(&job(first + 1, finished)),
    );
    let count_key = omega_consensus::state_machine::rules::JOBS_COUNT_KEY;
    for id in [1 << 40, (1 << 40) + 1] {
        tables.insert(Table::Jobs, id_key(id).to_vec(), encode(&job(id, JobState::Queued)));
    }
    tables.insert(Table::Meta, count_key.to_vec(), encode(&(JOBS_MAX as u64 + 2)));
    assert!(matches!(
        apply(&mut tables, 13, &enqueue),
        Response::Rejected(Rejection::Full(_))
    ));
    assert!(read::jobs(&tables).unwrap().iter().any(|job| job.id == first + 1));
}

/// Refresh rotation: the live token trades once; a traded token presented
/// again revokes the family, the live token included; unknown and expired
/// tokens are refused without a write.
#[test]
fn a_refresh_token_trades_once_and_its_reuse_revokes_the_family() {
    let mut tables = MemTables::default();
    let Response::Created(user) = apply(&mut tables, 1, &create_user("ada")) else {
        panic!("no user");
    };
    let token = |n: u8| [n; 32];
    apply(
        &mut tables,
        2,
        &Command::PutRefreshToken {
            hash: token(1),
            user,
            expires_ms: 1_000,
        },
    );
    let rotate = |old: u8, new: u8, now_ms: u64| Command::RotateRefreshToken {
        old: token(old),
        new: token(new),
        expires_ms: 2_000,
        now_ms,
    };
    assert_eq!(apply(&mut tables, 3, &rotate(1, 2, 10)), Response::Rotated { user });
    assert_eq!(apply(&mut tables, 4, &rotate(2, 3, 20)), Response::Rotated { user });
    assert!(read::refresh_token(&tables, &token(3)).unwrap().is_some());
    // Token 1 again: copied. The family goes, token 3 with it.
    assert_eq!(apply(&mut tables, 5, &rotate(1, 4, 30)), Response::FamilyRevoked);
    assert!(read::refresh_token(&tables, &token(3)).unwrap().is_none());
    assert!(read::refresh_token(&tables, &token(4)).unwrap().is_none());
    assert!(matches!(
        apply(&mut tables, 6, &rotate(3, 5, 40)),
        Response::Rejected(_)
    ));
    // Unknown and expired tokens are refused (and write nothing).
    assert!(matches!(
        apply(&mut tables, 7, &rotate(9, 10, 40)),
        Response::Rejected(_)
    ));
    apply(
        &mut tables,
        8,
        &Command::PutRefreshToken {
            hash: token(20),
            user,
            expires_ms: 100,
        },
    );
    assert!(matches!(
        apply(&mut tables, 9, &rotate(20, 21, 100)),
        Response::Rejected(_)
    ));
    // A long-lived family remembers a bounded number of traded tokens.
    apply(
        &mut tables,
        10,
        &Command::PutRefreshToken {
            hash: token(30),
            user,
            expires_ms: 10_000,
        },
    );
    let mut live = [30_u8; 32];
    for round in 0..100_u64 {
        let mut next = [0_u8; 32];
        next[..8].copy_from_slice(&(round + 1).to_le_bytes());
        next[31] = 0xee;
        let command = Command::RotateRefreshToken {
            old: live,
            new: next,
            expires_ms: 10_000,
            now_ms: 50,
        };
        assert_eq!(apply(&mut tables, 11 + round, &command), Response::Rotated { user });
        live = next;
    }
    let family: omega_consensus::model::RefreshFamily = postcard::from_bytes(
        &omega_consensus::state_machine::tables::KvRead::get(
            &tables,
            omega_consensus::state_machine::tables::Table::RefreshFamilies,
            &token(30),
        )
        .unwrap()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(family.rotated.len(), omega_consensus::model::REFRESH_ROTATED_MAX);
    assert_eq!(family.live, live);
}

/// Goal (hardening): a user holds a bounded number of API keys (each lives
/// until revoked); a revoked one frees its place, and another user is not
/// affected. Failed before the fix: every key was stored.
#[test]
fn api_keys_are_bounded_per_user() {
    use omega_consensus::model::API_KEYS_MAX;
    let mut tables = MemTables::default();
    let Response::Created(alice) = apply(&mut tables, 1, &create_user("alice")) else {
        panic!("no user");
    };
    let Response::Created(bob) = apply(&mut tables, 2, &create_user("bob")) else {
        panic!("no user");
    };
    let key = |user: u64, n: usize| Command::PutApiKey {
        hash: *blake3::hash(format!("{user}:{n}").as_bytes()).as_bytes(),
        user,
        name: format!("key {n}"),
        now_ms: 1,
    };
    let mut index = 3;
    for n in 0..API_KEYS_MAX {
        assert_eq!(apply(&mut tables, index, &key(alice, n)), Response::Done);
        index += 1;
    }
    let refused = apply(&mut tables, index, &key(alice, API_KEYS_MAX));
    assert!(
        matches!(&refused, Response::Rejected(Rejection::Quota(text)) if text.contains("at most")),
        "{refused:?}"
    );
    // Storing a key again is not a new one; another user has room.
    assert_eq!(apply(&mut tables, index + 1, &key(alice, 0)), Response::Done);
    assert_eq!(apply(&mut tables, index + 2, &key(bob, 0)), Response::Done);
    let revoke = Command::RevokeApiKey {
        hash: *blake3::hash(format!("{alice}:0").as_bytes()).as_bytes(),
    };
    assert_eq!(apply(&mut tables, index + 3, &revoke), Response::Done);
    assert_eq!(apply(&mut tables, index + 4, &key(alice, API_KEYS_MAX)), Response::Done);
}

/// Goal (hardening, item 13): signing out everywhere deletes every refresh
/// token of the user with its family (not another user's) and records when;
/// a purge deletes expired refresh tokens only, with their families, and
/// says how many. Failed before: neither command existed, and expired
/// tokens stayed in the replicated state for ever.
#[test]
fn signing_out_everywhere_and_purging_remove_refresh_sign_ins() {
    let mut tables = MemTables::default();
    let Response::Created(ada) = apply(&mut tables, 1, &create_user("ada")) else {
        panic!("no user");
    };
    let Response::Created(bob) = apply(&mut tables, 2, &create_user("bob")) else {
        panic!("no user");
    };
    let token = |n: u8| [n; 32];
    let put = |n: u8, user: u64, expires_ms: u64| Command::PutRefreshToken {
        hash: token(n),
        user,
        expires_ms,
    };
    let live = |tables: &MemTables, n: u8| read::refresh_token(tables, &token(n)).unwrap().is_some();
    apply(&mut tables, 3, &put(1, ada, 10_000));
    apply(&mut tables, 4, &put(2, ada, 10_000));
    apply(&mut tables, 5, &put(3, bob, 10_000));
    // Ada's first sign-in has rotated once: a family with lineage.
    let rotate = Command::RotateRefreshToken {
        old: token(1),
        new: token(4),
        expires_ms: 10_000,
        now_ms: 10,
    };
    assert_eq!(apply(&mut tables, 6, &rotate), Response::Rotated { user: ada });
    let sign_out = Command::SignOutEverywhere { user: ada, now_ms: 500 };
    assert_eq!(apply(&mut tables, 7, &sign_out), Response::Done);
    assert!(!live(&tables, 4) && !live(&tables, 2), "ada's sign-ins end");
    assert!(live(&tables, 3), "bob's stays");
    assert_eq!(read::signed_out_at(&tables, ada).unwrap(), Some(500));
    assert_eq!(read::signed_out_at(&tables, bob).unwrap(), None);
    // A reuse of the rotated token 1 is now just unknown: the family is gone.
    let again = Command::RotateRefreshToken {
        old: token(1),
        new: token(5),
        expires_ms: 10_000,
        now_ms: 20,
    };
    assert!(matches!(apply(&mut tables, 8, &again), Response::Rejected(_)));
    // A purge at 15 s: bob's token expired at 10 s; one put later lives on.
    apply(&mut tables, 9, &put(6, bob, 60_000));
    let purge = Command::PurgeExpiredRefreshTokens { now_ms: 15_000 };
    assert_eq!(apply(&mut tables, 10, &purge), Response::Purged(1));
    assert!(!live(&tables, 3) && live(&tables, 6));
    assert_eq!(apply(&mut tables, 11, &purge), Response::Purged(0));
    let sign_out = Command::SignOutEverywhere { user: 99, now_ms: 1 };
    assert!(matches!(apply(&mut tables, 12, &sign_out), Response::Rejected(_)));
}
