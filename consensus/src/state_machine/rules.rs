//! Applying one command: the state machine's rules. Deterministic (time
//! comes from the command, ids from the log index or a replicated counter)
//! and independent of RocksDB, so property tests drive it in memory.
//!
//! Rules: user and library names are unique (case-insensitive); a join token
//! admits one node and only before it expires; a job moves only along
//! `Queued → Leased → Done | Failed | Queued`, at most one unexpired lease
//! exists per job, and only the holder of the current fencing token (the
//! claim's log index) may renew or finish it. The job table holds at most
//! [`JOBS_MAX`] jobs: a new one takes the place of the oldest finished.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::tables::{KvRead, Overlay, Table};
use crate::codec::{decode, encode, id_key, key_second_id, pair_key};
use crate::command::{Command, JobOutcome, Rejection, Response};
use crate::model::{
    API_KEYS_MAX, APP_PASSWORDS_MAX, ApiKey, AppPassword, EntityId, Favorite, Hash, Item, ItemWrite, JOBS_MAX, Job,
    JobState, JoinTokenUse, Library, PEER_ADDRS_MAX, PEER_TEXT_MAX, PLAYLIST_ITEMS_MAX, PLAYLIST_NAME_MAX,
    PURGE_BATCH_MAX, Peer, Playlist, REFRESH_ROTATED_MAX, RefreshFamily, RefreshToken, User, WatchState,
};

/// Key of the id counter in [`Table::Meta`].
pub const NEXT_ID_KEY: &[u8] = b"next_id";
/// Key of the token-signing key in [`Table::Keys`].
pub const TOKEN_KEY: &[u8] = b"token";
/// Key of the number of jobs in [`Table::Jobs`], in [`Table::Meta`].
pub const JOBS_COUNT_KEY: &[u8] = b"jobs_count";
/// Longest user or library name accepted.
pub const NAME_MAX_BYTES: usize = 128;
/// Most items one `UpsertItems` may carry.
pub const UPSERT_ITEMS_MAX: usize = 4096;

fn get<T: DeserializeOwned, R: KvRead + ?Sized>(
    tx: &Overlay<'_, R>,
    table: Table,
    key: &[u8],
) -> io::Result<Option<T>> {
    tx.get(table, key)?
        .map(|bytes| decode(table.cf_name(), &bytes))
        .transpose()
}

fn put<T: Serialize, R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>, table: Table, key: &[u8], value: &T) {
    tx.put(table, key, encode(value));
}

fn next_id<R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>) -> io::Result<EntityId> {
    let id: u64 = get(tx, Table::Meta, NEXT_ID_KEY)?.unwrap_or(1);
    put(tx, Table::Meta, NEXT_ID_KEY, &(id + 1));
    Ok(id)
}

fn not_found(what: &str, id: impl ToString) -> Response {
    Response::Rejected(Rejection::NotFound {
        what: what.into(),
        id: id.to_string(),
    })
}

fn name_key(name: &str) -> Vec<u8> {
    name.to_lowercase().into_bytes()
}

/// Checks that `name` is well formed and not taken in `names`; the outer
/// error is a storage failure, the inner one the refusal.
fn name_is_free<R: KvRead + ?Sized>(
    tx: &Overlay<'_, R>,
    names: Table,
    name: &str,
) -> io::Result<Result<(), Rejection>> {
    if name.trim().is_empty() || name.len() > NAME_MAX_BYTES || name.chars().any(char::is_control) {
        return Ok(Err(Rejection::Invalid(format!(
            "a name must be 1 to {NAME_MAX_BYTES} bytes without control characters"
        ))));
    }
    if tx.get(names, &name_key(name))?.is_some() {
        return Ok(Err(Rejection::NameTaken(name.to_owned())));
    }
    Ok(Ok(()))
}

/// Applies `command`, the entry at log `index`, to `tx`. A refused command
/// leaves `tx` unchanged and answers [`Response::Rejected`]; an `Err` is a
/// storage failure.
pub fn apply_command<R: KvRead + ?Sized>(
    tx: &mut Overlay<'_, R>,
    index: u64,
    command: &Command,
) -> io::Result<Response> {
    match command {
        Command::Noop => Ok(Response::Done),
        Command::ConsumeJoinToken {
            token_id,
            expires_ms,
            now_ms,
        } => {
            if get::<JoinTokenUse, R>(tx, Table::JoinTokens, token_id)?.is_some() {
                return Ok(Response::Rejected(Rejection::TokenUsed));
            }
            if now_ms >= expires_ms {
                return Ok(Response::Rejected(Rejection::TokenExpired));
            }
            put(
                tx,
                Table::JoinTokens,
                token_id,
                &JoinTokenUse {
                    node: index,
                    used_ms: *now_ms,
                },
            );
            Ok(Response::NodeId(index))
        }
        Command::CreateFirstAdmin {
            name,
            password_hash,
            now_ms,
        } => {
            if !tx.scan_prefix(Table::Users, &[])?.is_empty() {
                return Ok(Response::Rejected(Rejection::Invalid(
                    "setup is done: an administrator exists".into(),
                )));
            }
            let create = Command::CreateUser {
                name: name.clone(),
                password_hash: password_hash.clone(),
                roles: [crate::model::Role::Admin, crate::model::Role::Viewer].into(),
                library_access: crate::model::LibraryAccess::All,
                now_ms: *now_ms,
            };
            apply_command(tx, index, &create)
        }
        Command::CreateUser {
            name,
            password_hash,
            roles,
            library_access,
            now_ms,
        } => {
            if let Err(rejection) = name_is_free(tx, Table::UserNames, name)? {
                return Ok(Response::Rejected(rejection));
            }
            let id = next_id(tx)?;
            let user = User {
                id,
                name: name.clone(),
                password_hash: password_hash.clone(),
                roles: roles.clone(),
                totp_secret: None,
                library_access: library_access.clone(),
                created_ms: *now_ms,
            };
            put(tx, Table::Users, &id_key(id), &user);
            put(tx, Table::UserNames, &name_key(name), &id);
            Ok(Response::Created(id))
        }
        Command::UpdateUser {
            id,
            password_hash,
            roles,
            library_access,
            totp_secret,
        } => {
            let Some(mut user) = get::<User, R>(tx, Table::Users, &id_key(*id))? else {
                return Ok(not_found("user", id));
            };
            if let Some(hash) = password_hash {
                user.password_hash = hash.clone();
            }
            if let Some(roles) = roles {
                user.roles = roles.clone();
            }
            if let Some(access) = library_access {
                user.library_access = access.clone();
            }
            if let Some(secret) = totp_secret {
                user.totp_secret = secret.clone();
            }
            put(tx, Table::Users, &id_key(*id), &user);
            Ok(Response::Done)
        }
        Command::DeleteUser { id } => {
            let Some(user) = get::<User, R>(tx, Table::Users, &id_key(*id))? else {
                return Ok(not_found("user", id));
            };
            tx.delete(Table::Users, &id_key(*id));
            tx.delete(Table::UserNames, &name_key(&user.name));
            tx.delete(Table::SignedOut, &id_key(*id));
            for table in [Table::Watch, Table::AppPasswords, Table::Favorites] {
                for (key, _) in tx.scan_prefix(table, &id_key(*id))? {
                    tx.delete(table, &key);
                }
            }
            // Tokens and keys of a deleted user stop working at once: every
            // lookup checks that their user exists. They expire or are
            // revoked later; scanning every credential here would make a
            // delete cost the whole table.
            Ok(Response::Done)
        }
        Command::PutRefreshToken { hash, user, expires_ms } => {
            let token = RefreshToken {
                user: *user,
                expires_ms: *expires_ms,
            };
            put_for_user(tx, *user, Table::RefreshTokens, hash, &token)
        }
        Command::RevokeRefreshToken { hash } => {
            tx.delete(Table::RefreshTokens, hash);
            Ok(Response::Done)
        }
        Command::RotateRefreshToken {
            old,
            new,
            expires_ms,
            now_ms,
        } => rotate_refresh_token(tx, old, new, *expires_ms, *now_ms),
        Command::SignOutEverywhere { user, now_ms } => sign_out_everywhere(tx, *user, *now_ms),
        Command::SetTokenKey { key, removals } => {
            let record = crate::model::TokenKey {
                key: key.clone(),
                removals: *removals,
            };
            put(tx, Table::Keys, TOKEN_KEY, &record);
            Ok(Response::Done)
        }
        Command::PurgeExpiredRefreshTokens { now_ms } => {
            let mut purged = 0_u64;
            for (hash, value) in tx.scan_prefix(Table::RefreshTokens, &[])? {
                if purged as usize >= PURGE_BATCH_MAX {
                    break;
                }
                let token: RefreshToken = decode(Table::RefreshTokens.cf_name(), &value)?;
                if token.expires_ms <= *now_ms {
                    delete_refresh_sign_in(tx, &hash)?;
                    purged += 1;
                }
            }
            Ok(Response::Purged(purged))
        }
        Command::PutApiKey {
            hash,
            user,
            name,
            now_ms,
        } => {
            if tx.get(Table::ApiKeys, hash)?.is_none() && api_keys_of(tx, *user)? >= API_KEYS_MAX {
                return Ok(Response::Rejected(Rejection::Quota(format!(
                    "a user holds at most {API_KEYS_MAX} API keys: revoke one first"
                ))));
            }
            let key = ApiKey {
                user: *user,
                name: name.clone(),
                created_ms: *now_ms,
            };
            put_for_user(tx, *user, Table::ApiKeys, hash, &key)
        }
        Command::RevokeApiKey { hash } => {
            tx.delete(Table::ApiKeys, hash);
            Ok(Response::Done)
        }
        Command::CreateLibrary {
            name,
            kind,
            paths,
            node,
            now_ms,
        } => {
            if let Err(rejection) = name_is_free(tx, Table::LibraryNames, name)? {
                return Ok(Response::Rejected(rejection));
            }
            let id = next_id(tx)?;
            let library = Library {
                id,
                name: name.clone(),
                kind: *kind,
                paths: paths.clone(),
                node: *node,
                created_ms: *now_ms,
            };
            put(tx, Table::Libraries, &id_key(id), &library);
            put(tx, Table::LibraryNames, &name_key(name), &id);
            Ok(Response::Created(id))
        }
        Command::DeleteLibrary { id } => {
            let Some(library) = get::<Library, R>(tx, Table::Libraries, &id_key(*id))? else {
                return Ok(not_found("library", id));
            };
            for (key, _) in tx.scan_prefix(Table::LibraryItems, &id_key(*id))? {
                if let Some(item) = get::<Item, R>(tx, Table::Items, &key[8..])? {
                    remove_item(tx, &item)?;
                }
            }
            tx.delete(Table::Libraries, &id_key(*id));
            tx.delete(Table::LibraryNames, &name_key(&library.name));
            Ok(Response::Done)
        }
        Command::UpsertItems { items, now_ms } => upsert_items(tx, items, *now_ms),
        Command::RemoveItems { keys } => {
            for key in keys {
                if let Some(id) = get::<EntityId, R>(tx, Table::ItemKeys, key.as_bytes())?
                    && let Some(item) = get::<Item, R>(tx, Table::Items, &id_key(id))?
                {
                    remove_item(tx, &item)?;
                }
            }
            Ok(Response::Done)
        }
        Command::SetWatchState { user, item, state } => {
            if tx.get(Table::Users, &id_key(*user))?.is_none() {
                return Ok(not_found("user", user));
            }
            if tx.get(Table::Items, &id_key(*item))?.is_none() {
                return Ok(not_found("item", item));
            }
            put::<WatchState, R>(tx, Table::Watch, &pair_key(*user, *item), state);
            Ok(Response::Done)
        }
        Command::PutAppPassword {
            user,
            id,
            name,
            sealed,
            now_ms,
        } => {
            if tx.get(Table::Users, &id_key(*user))?.is_none() {
                return Ok(not_found("user", user));
            }
            let key = pair_key(*user, *id);
            if tx.get(Table::AppPasswords, &key)?.is_some() {
                return Ok(Response::Rejected(Rejection::Invalid(format!(
                    "app password {id} exists"
                ))));
            }
            if tx.scan_prefix(Table::AppPasswords, &id_key(*user))?.len() >= APP_PASSWORDS_MAX {
                return Ok(Response::Rejected(Rejection::Quota(format!(
                    "a user holds at most {APP_PASSWORDS_MAX} app passwords: revoke one first"
                ))));
            }
            let password = AppPassword {
                id: *id,
                user: *user,
                name: name.clone(),
                sealed: sealed.clone(),
                created_ms: *now_ms,
            };
            put(tx, Table::AppPasswords, &key, &password);
            Ok(Response::Created(*id))
        }
        Command::RevokeAppPassword { user, id } => {
            let key = pair_key(*user, *id);
            if tx.get(Table::AppPasswords, &key)?.is_none() {
                return Ok(not_found("app password", id));
            }
            tx.delete(Table::AppPasswords, &key);
            Ok(Response::Done)
        }
        Command::SetFavorite {
            user,
            item,
            favorite,
            now_ms,
        } => {
            if tx.get(Table::Users, &id_key(*user))?.is_none() {
                return Ok(not_found("user", user));
            }
            if tx.get(Table::Items, &id_key(*item))?.is_none() {
                return Ok(not_found("item", item));
            }
            let key = pair_key(*user, *item);
            if *favorite {
                // Marking again keeps the first mark's time.
                if tx.get(Table::Favorites, &key)?.is_none() {
                    put(tx, Table::Favorites, &key, &Favorite { since_ms: *now_ms });
                }
            } else {
                tx.delete(Table::Favorites, &key);
            }
            Ok(Response::Done)
        }
        Command::CreatePlaylist {
            owner,
            name,
            items,
            public,
            now_ms,
        } => {
            if tx.get(Table::Users, &id_key(*owner))?.is_none() {
                return Ok(not_found("user", owner));
            }
            if let Err(rejection) = playlist_is_valid(Some(name), Some(items)) {
                return Ok(Response::Rejected(rejection));
            }
            let id = next_id(tx)?;
            let playlist = Playlist {
                id,
                owner: *owner,
                name: name.trim().to_owned(),
                items: items.clone(),
                public: *public,
                created_ms: *now_ms,
                updated_ms: *now_ms,
            };
            put(tx, Table::Playlists, &id_key(id), &playlist);
            Ok(Response::Created(id))
        }
        Command::UpdatePlaylist {
            id,
            owner,
            name,
            items,
            public,
            now_ms,
        } => {
            let Some(mut playlist) = owned_playlist(tx, *id, *owner)? else {
                return Ok(not_found("playlist", id));
            };
            if let Err(rejection) = playlist_is_valid(name.as_ref(), items.as_ref()) {
                return Ok(Response::Rejected(rejection));
            }
            if let Some(name) = name {
                playlist.name = name.trim().to_owned();
            }
            if let Some(items) = items {
                playlist.items = items.clone();
            }
            if let Some(public) = public {
                playlist.public = *public;
            }
            playlist.updated_ms = *now_ms;
            put(tx, Table::Playlists, &id_key(*id), &playlist);
            Ok(Response::Done)
        }
        Command::SetPeer { node, peer_id, addrs } => {
            let too_long = |text: &String| text.is_empty() || text.len() > PEER_TEXT_MAX;
            if too_long(peer_id) || addrs.len() > PEER_ADDRS_MAX || addrs.iter().any(too_long) {
                return Ok(Response::Rejected(Rejection::Invalid(format!(
                    "a peer has a peer id and at most {PEER_ADDRS_MAX} addresses of at most {PEER_TEXT_MAX} bytes"
                ))));
            }
            let peer = Peer {
                peer_id: peer_id.clone(),
                addrs: addrs.clone(),
            };
            put(tx, Table::Peers, &id_key(*node), &peer);
            Ok(Response::Done)
        }
        Command::DeletePlaylist { id, owner } => {
            if owned_playlist(tx, *id, *owner)?.is_none() {
                return Ok(not_found("playlist", id));
            }
            tx.delete(Table::Playlists, &id_key(*id));
            Ok(Response::Done)
        }
        Command::EnqueueJob { item, profile, now_ms } => {
            if tx.get(Table::Items, &id_key(*item))?.is_none() {
                return Ok(not_found("item", item));
            }
            if !make_room_for_a_job(tx)? {
                return Ok(Response::Rejected(Rejection::Full(format!(
                    "the job table holds {JOBS_MAX} jobs, none finished: wait for some to finish"
                ))));
            }
            let id = next_id(tx)?;
            let job = Job {
                id,
                item: *item,
                profile: profile.clone(),
                state: JobState::Queued,
                attempts: 0,
                created_ms: *now_ms,
            };
            put(tx, Table::Jobs, &id_key(id), &job);
            Ok(Response::Created(id))
        }
        Command::ClaimJob {
            job,
            node,
            now_ms,
            lease_ms,
        } => with_job(tx, *job, |job| {
            match job.state {
                JobState::Queued => {}
                JobState::Leased {
                    node: holder,
                    expires_ms,
                    ..
                } if expires_ms > *now_ms => {
                    return Err(Rejection::LeaseHeld {
                        job: job.id,
                        holder,
                        expires_ms,
                    });
                }
                JobState::Leased { .. } => {}
                JobState::Done { .. } | JobState::Failed { .. } => {
                    return Err(illegal(job, "claim"));
                }
            }
            let expires_ms = now_ms.saturating_add(*lease_ms);
            job.state = JobState::Leased {
                node: *node,
                expires_ms,
                fencing: index,
            };
            job.attempts += 1;
            Ok(Response::Lease {
                fencing: index,
                expires_ms,
            })
        }),
        Command::RenewLease {
            job,
            fencing,
            now_ms,
            lease_ms,
        } => with_job(tx, *job, |job| {
            let (node, _) = holder(job, *fencing, *now_ms, "renew")?;
            let expires_ms = now_ms.saturating_add(*lease_ms);
            job.state = JobState::Leased {
                node,
                expires_ms,
                fencing: *fencing,
            };
            Ok(Response::Lease {
                fencing: *fencing,
                expires_ms,
            })
        }),
        Command::RevokeCertificate { fingerprint, node } => {
            put(tx, Table::Revoked, fingerprint.as_bytes(), node);
            Ok(Response::Done)
        }
        Command::FinishJob {
            job,
            fencing,
            outcome,
            now_ms,
        } => with_job(tx, *job, |job| {
            let (node, _) = holder(job, *fencing, *now_ms, "finish")?;
            job.state = match outcome {
                JobOutcome::Done { output } => JobState::Done {
                    node,
                    output: *output,
                    finished_ms: *now_ms,
                },
                JobOutcome::Failed { reason } => JobState::Failed {
                    reason: reason.clone(),
                    finished_ms: *now_ms,
                },
                JobOutcome::Released => JobState::Queued,
            };
            Ok(Response::Done)
        }),
    }
}

/// Makes room for one more job under [`JOBS_MAX`] by forgetting the oldest
/// finished ones, and counts the new job; false (nothing written) when too
/// few have finished. The count lives in [`Table::Meta`] so that only a
/// full table is scanned; a table from before the count is counted once.
fn make_room_for_a_job<R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>) -> io::Result<bool> {
    let count: u64 = match get(tx, Table::Meta, JOBS_COUNT_KEY)? {
        Some(count) => count,
        None => tx.scan_prefix(Table::Jobs, &[])?.len() as u64,
    };
    let excess = usize::try_from(count + 1)
        .unwrap_or(usize::MAX)
        .saturating_sub(JOBS_MAX);
    let mut forgotten = Vec::new();
    if excess > 0 {
        // Keys are big-endian ids: key order is age order.
        for (key, bytes) in tx.scan_prefix(Table::Jobs, &[])? {
            if forgotten.len() == excess {
                break;
            }
            let job: Job = decode(Table::Jobs.cf_name(), &bytes)?;
            if job.state.is_finished() {
                forgotten.push(key);
            }
        }
        if forgotten.len() < excess {
            return Ok(false);
        }
    }
    for key in &forgotten {
        tx.delete(Table::Jobs, key);
    }
    put(tx, Table::Meta, JOBS_COUNT_KEY, &(count + 1 - forgotten.len() as u64));
    Ok(true)
}

/// Stores a credential of `user`, refused when the user does not exist.
/// The API keys `user` holds. The table is keyed by the secret's hash, so
/// this reads them all: at most [`API_KEYS_MAX`] per user.
fn api_keys_of<R: KvRead + ?Sized>(tx: &Overlay<'_, R>, user: EntityId) -> io::Result<usize> {
    let mut count = 0;
    for (_, value) in tx.scan_prefix(Table::ApiKeys, &[])? {
        let key: ApiKey = decode(Table::ApiKeys.cf_name(), &value)?;
        if key.user == user {
            count += 1;
        }
    }
    Ok(count)
}

fn put_for_user<T: Serialize, R: KvRead + ?Sized>(
    tx: &mut Overlay<'_, R>,
    user: EntityId,
    table: Table,
    key: &[u8],
    value: &T,
) -> io::Result<Response> {
    if tx.get(Table::Users, &id_key(user))?.is_none() {
        return Ok(not_found("user", user));
    }
    put(tx, table, key, value);
    Ok(Response::Done)
}

/// Trades live refresh token `old` for `new` within its family; a token
/// the family already traded revokes the family.
/// Deletes every refresh token of `user` with its family, and records
/// `now_ms` as the time before which its access tokens are refused. Reads
/// the whole token table (it is keyed by secret): a rare act, and the table
/// holds only live sign-ins, since expired tokens are purged.
fn sign_out_everywhere<R: KvRead + ?Sized>(
    tx: &mut Overlay<'_, R>,
    user: EntityId,
    now_ms: u64,
) -> io::Result<Response> {
    if tx.get(Table::Users, &id_key(user))?.is_none() {
        return Ok(not_found("user", user));
    }
    for (hash, value) in tx.scan_prefix(Table::RefreshTokens, &[])? {
        let token: RefreshToken = decode(Table::RefreshTokens.cf_name(), &value)?;
        if token.user == user {
            delete_refresh_sign_in(tx, &hash)?;
        }
    }
    put(tx, Table::SignedOut, &id_key(user), &now_ms);
    Ok(Response::Done)
}

/// Deletes the live refresh token `hash`, and its family with every
/// lineage row when it has one.
fn delete_refresh_sign_in<R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>, hash: &[u8]) -> io::Result<()> {
    tx.delete(Table::RefreshTokens, hash);
    let family_id: Vec<u8> =
        get::<Hash, R>(tx, Table::RefreshLineage, hash)?.map_or_else(|| hash.to_vec(), |id| id.to_vec());
    if let Some(family) = get::<RefreshFamily, R>(tx, Table::RefreshFamilies, &family_id)? {
        for rotated in family.rotated.iter().chain([&family.live]) {
            tx.delete(Table::RefreshLineage, rotated);
        }
        tx.delete(Table::RefreshFamilies, &family_id);
    }
    tx.delete(Table::RefreshLineage, hash);
    Ok(())
}

fn rotate_refresh_token<R: KvRead + ?Sized>(
    tx: &mut Overlay<'_, R>,
    old: &Hash,
    new: &Hash,
    expires_ms: u64,
    now_ms: u64,
) -> io::Result<Response> {
    // A family is named by its first token, which has no lineage row.
    let family_id: Hash = get(tx, Table::RefreshLineage, old)?.unwrap_or(*old);
    let family: Option<RefreshFamily> = get(tx, Table::RefreshFamilies, &family_id)?;
    let live = get::<RefreshToken, R>(tx, Table::RefreshTokens, old)?.filter(|token| token.expires_ms > now_ms);
    let Some(token) = live else {
        return Ok(match family {
            Some(family) if family.rotated.contains(old) => {
                tx.delete(Table::RefreshTokens, &family.live);
                for hash in family.rotated.iter().chain([&family.live]) {
                    tx.delete(Table::RefreshLineage, hash);
                }
                tx.delete(Table::RefreshFamilies, &family_id);
                Response::FamilyRevoked
            }
            _ => not_found("refresh token", "presented"),
        });
    };
    if tx.get(Table::Users, &id_key(token.user))?.is_none() {
        return Ok(not_found("user", token.user));
    }
    if old == new || tx.get(Table::RefreshTokens, new)?.is_some() {
        return Ok(Response::Rejected(Rejection::Invalid(
            "the new refresh token is not new".into(),
        )));
    }
    let mut family = family.unwrap_or(RefreshFamily {
        user: token.user,
        live: *old,
        rotated: Vec::new(),
    });
    debug_assert_eq!(family.live, *old, "only a family's live token is in the token table");
    tx.delete(Table::RefreshTokens, old);
    family.rotated.push(*old);
    put(tx, Table::RefreshLineage, old, &family_id);
    if family.rotated.len() > REFRESH_ROTATED_MAX {
        let forgotten = family.rotated.remove(0);
        tx.delete(Table::RefreshLineage, &forgotten);
    }
    family.live = *new;
    put(
        tx,
        Table::RefreshTokens,
        new,
        &RefreshToken {
            user: token.user,
            expires_ms,
        },
    );
    put(tx, Table::RefreshLineage, new, &family_id);
    put(tx, Table::RefreshFamilies, &family_id, &family);
    debug_assert!(family.rotated.len() <= REFRESH_ROTATED_MAX);
    Ok(Response::Rotated { user: token.user })
}

/// Playlist `id` if `owner` owns it: to anyone else it does not exist.
fn owned_playlist<R: KvRead + ?Sized>(
    tx: &Overlay<'_, R>,
    id: EntityId,
    owner: EntityId,
) -> io::Result<Option<Playlist>> {
    Ok(get::<Playlist, R>(tx, Table::Playlists, &id_key(id))?.filter(|playlist| playlist.owner == owner))
}

/// A playlist's name has 1 to [`PLAYLIST_NAME_MAX`] printable characters
/// and it holds at most [`PLAYLIST_ITEMS_MAX`] items. Items are not checked
/// against the catalog: readers skip what is gone or hidden.
fn playlist_is_valid(name: Option<&String>, items: Option<&Vec<EntityId>>) -> Result<(), Rejection> {
    if let Some(name) = name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > PLAYLIST_NAME_MAX || name.chars().any(char::is_control) {
            return Err(Rejection::Invalid(format!(
                "a playlist's name has 1 to {PLAYLIST_NAME_MAX} printable characters"
            )));
        }
    }
    if items.is_some_and(|items| items.len() > PLAYLIST_ITEMS_MAX) {
        return Err(Rejection::Invalid(format!(
            "a playlist holds at most {PLAYLIST_ITEMS_MAX} items"
        )));
    }
    Ok(())
}

fn illegal(job: &Job, action: &str) -> Rejection {
    Rejection::IllegalTransition {
        job: job.id,
        state: job.state.name().into(),
        action: action.into(),
    }
}

/// Checks that `fencing` is the current, unexpired lease; returns its holder
/// and expiry.
fn holder(job: &Job, fencing: u64, now_ms: u64, action: &str) -> Result<(u64, u64), Rejection> {
    match job.state {
        JobState::Leased {
            node,
            expires_ms,
            fencing: current,
        } => {
            // An expired lease may have been claimed by no one yet, but its
            // holder has lost it all the same: another node may be about to
            // claim it, so late writes are refused.
            if current != fencing || expires_ms <= now_ms {
                Err(Rejection::StaleFencing {
                    job: job.id,
                    given: fencing,
                })
            } else {
                Ok((node, expires_ms))
            }
        }
        _ => Err(illegal(job, action)),
    }
}

fn with_job<R: KvRead + ?Sized>(
    tx: &mut Overlay<'_, R>,
    id: EntityId,
    change: impl FnOnce(&mut Job) -> Result<Response, Rejection>,
) -> io::Result<Response> {
    let Some(mut job) = get::<Job, R>(tx, Table::Jobs, &id_key(id))? else {
        return Ok(not_found("job", id));
    };
    match change(&mut job) {
        Ok(response) => {
            put(tx, Table::Jobs, &id_key(id), &job);
            Ok(response)
        }
        Err(rejection) => Ok(Response::Rejected(rejection)),
    }
}

fn upsert_items<R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>, items: &[ItemWrite], now_ms: u64) -> io::Result<Response> {
    if items.len() > UPSERT_ITEMS_MAX {
        return Ok(Response::Rejected(Rejection::Invalid(format!(
            "at most {UPSERT_ITEMS_MAX} items per write"
        ))));
    }
    // Validate everything first, so that a refused batch writes nothing.
    let mut ids = Vec::with_capacity(items.len());
    let mut plan = Vec::with_capacity(items.len());
    let mut new_keys: std::collections::BTreeMap<&str, EntityId> = std::collections::BTreeMap::new();
    let mut counter: u64 = get(tx, Table::Meta, NEXT_ID_KEY)?.unwrap_or(1);
    for write in items {
        if write.key.is_empty() {
            return Ok(Response::Rejected(Rejection::Invalid("an item needs a key".into())));
        }
        if tx.get(Table::Libraries, &id_key(write.library))?.is_none() {
            return Ok(not_found("library", write.library));
        }
        let parent = match &write.parent_key {
            None => None,
            Some(parent_key) => match new_keys.get(parent_key.as_str()) {
                Some(id) => Some(*id),
                None => match get::<EntityId, R>(tx, Table::ItemKeys, parent_key.as_bytes())? {
                    Some(id) => Some(id),
                    None => return Ok(not_found("parent item", parent_key)),
                },
            },
        };
        let existing = match new_keys.get(write.key.as_str()) {
            Some(id) => Some(*id),
            None => get::<EntityId, R>(tx, Table::ItemKeys, write.key.as_bytes())?,
        };
        let id = existing.unwrap_or_else(|| {
            let id = counter;
            counter += 1;
            id
        });
        if parent == Some(id) {
            return Ok(Response::Rejected(Rejection::Invalid(format!(
                "item {:?} is its own parent",
                write.key
            ))));
        }
        new_keys.insert(&write.key, id);
        ids.push(id);
        plan.push((id, parent, write));
    }
    put(tx, Table::Meta, NEXT_ID_KEY, &counter);
    for (id, parent, write) in plan {
        let old = get::<Item, R>(tx, Table::Items, &id_key(id))?;
        if let Some(old) = &old {
            unlink_item(tx, old);
        }
        let item = Item {
            id,
            parent,
            added_ms: old.as_ref().map_or(now_ms, |old| old.added_ms),
            updated_ms: now_ms,
            fields: write.clone(),
        };
        put(tx, Table::Items, &id_key(id), &item);
        put(tx, Table::ItemKeys, write.key.as_bytes(), &id);
        put(tx, Table::ItemOrder, &order_key(&item), &write.library);
        tx.put(Table::LibraryItems, &pair_key(write.library, id), Vec::new());
        if let Some(parent) = parent {
            tx.put(Table::ItemChildren, &pair_key(parent, id), Vec::new());
        }
    }
    Ok(Response::Items(ids))
}

/// Key of an item in [`Table::ItemOrder`].
pub fn order_key(item: &Item) -> Vec<u8> {
    let title = item.fields.sort_title.as_bytes();
    let mut key = Vec::with_capacity(1 + title.len() + 9);
    key.push(item.fields.kind.tag());
    // A title never holds 0 (it is UTF-8 text with control characters
    // allowed only as written); 0 ends it so that "ab" sorts before "abc".
    key.extend(title.iter().map(|byte| if *byte == 0 { b' ' } else { *byte }));
    key.push(0);
    key.extend_from_slice(&id_key(item.id));
    key
}

/// Drops an item's index entries (not the item row).
fn unlink_item<R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>, item: &Item) {
    tx.delete(Table::ItemOrder, &order_key(item));
    tx.delete(Table::ItemKeys, item.fields.key.as_bytes());
    tx.delete(Table::LibraryItems, &pair_key(item.fields.library, item.id));
    if let Some(parent) = item.parent {
        tx.delete(Table::ItemChildren, &pair_key(parent, item.id));
    }
}

/// Removes an item. Its children stay (a rescan re-parents or removes
/// them); readers treat a missing parent as none, and drop watch state of a
/// missing item.
fn remove_item<R: KvRead + ?Sized>(tx: &mut Overlay<'_, R>, item: &Item) -> io::Result<()> {
    unlink_item(tx, item);
    for (key, _) in tx.scan_prefix(Table::ItemChildren, &id_key(item.id))? {
        tx.delete(Table::ItemChildren, &key);
    }
    tx.delete(Table::Items, &id_key(item.id));
    Ok(())
}

/// The child ids of `parent`.
pub fn children<R: KvRead + ?Sized>(tables: &R, parent: EntityId) -> io::Result<Vec<EntityId>> {
    tables
        .scan_prefix(Table::ItemChildren, &id_key(parent))?
        .iter()
        .map(|(key, _)| key_second_id(key))
        .collect()
}
