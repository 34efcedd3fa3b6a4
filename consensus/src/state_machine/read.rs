//! Reads of the state machine's tables. They see what this node applied;
//! callers wanting linearizable reads first wait for a read index
//! (`Cluster::read`), browsing may skip that (`Consistency::Stale`).

use std::io;

use serde::de::DeserializeOwned;

use super::tables::{KvRead, Table};
use crate::codec::{decode, id_key, pair_key};
use crate::model::{
    ApiKey, AppPassword, EntityId, Favorite, Hash, Item, Job, Library, NodeId, Peer, Playlist, RefreshToken, User,
    WatchState,
};

fn get<T: DeserializeOwned>(tables: &(impl KvRead + ?Sized), table: Table, key: &[u8]) -> io::Result<Option<T>> {
    tables
        .get(table, key)?
        .map(|bytes| decode(table.cf_name(), &bytes))
        .transpose()
}

fn all<T: DeserializeOwned>(tables: &(impl KvRead + ?Sized), table: Table) -> io::Result<Vec<T>> {
    tables
        .scan_prefix(table, &[])?
        .iter()
        .map(|(_, value)| decode(table.cf_name(), value))
        .collect()
}

/// A user by id.
pub fn user(tables: &(impl KvRead + ?Sized), id: EntityId) -> io::Result<Option<User>> {
    get(tables, Table::Users, &id_key(id))
}

/// A user by name (case-insensitive).
pub fn user_by_name(tables: &(impl KvRead + ?Sized), name: &str) -> io::Result<Option<User>> {
    match get::<EntityId>(tables, Table::UserNames, name.to_lowercase().as_bytes())? {
        Some(id) => user(tables, id),
        None => Ok(None),
    }
}

/// Every user, by id.
pub fn users(tables: &(impl KvRead + ?Sized)) -> io::Result<Vec<User>> {
    all(tables, Table::Users)
}

/// A refresh token by the hash of its secret, if its user still exists.
pub fn refresh_token(tables: &(impl KvRead + ?Sized), hash: &Hash) -> io::Result<Option<RefreshToken>> {
    let token: Option<RefreshToken> = get(tables, Table::RefreshTokens, hash)?;
    Ok(match token {
        Some(token) if user(tables, token.user)?.is_some() => Some(token),
        _ => None,
    })
}

/// An API key by the hash of its secret, if its user still exists.
pub fn api_key(tables: &(impl KvRead + ?Sized), hash: &Hash) -> io::Result<Option<ApiKey>> {
    let key: Option<ApiKey> = get(tables, Table::ApiKeys, hash)?;
    Ok(match key {
        Some(key) if user(tables, key.user)?.is_some() => Some(key),
        _ => None,
    })
}

/// The API keys of `user`, with the hashes they are stored under (a scan
/// of every key: there are few).
pub fn api_keys_of(tables: &(impl KvRead + ?Sized), owner: EntityId) -> io::Result<Vec<(Hash, ApiKey)>> {
    let mut keys = Vec::new();
    for (hash, value) in tables.scan_prefix(Table::ApiKeys, &[])? {
        let key: ApiKey = decode(Table::ApiKeys.cf_name(), &value)?;
        if key.user == owner
            && let Ok(hash) = Hash::try_from(hash.as_slice())
        {
            keys.push((hash, key));
        }
    }
    Ok(keys)
}

/// Every library, by id.
pub fn libraries(tables: &(impl KvRead + ?Sized)) -> io::Result<Vec<Library>> {
    all(tables, Table::Libraries)
}

/// An item by id.
pub fn item(tables: &(impl KvRead + ?Sized), id: EntityId) -> io::Result<Option<Item>> {
    get(tables, Table::Items, &id_key(id))
}

/// An item by natural key.
pub fn item_by_key(tables: &(impl KvRead + ?Sized), key: &str) -> io::Result<Option<Item>> {
    match get::<EntityId>(tables, Table::ItemKeys, key.as_bytes())? {
        Some(id) => item(tables, id),
        None => Ok(None),
    }
}

/// A user's progress on an item.
pub fn watch_state(tables: &(impl KvRead + ?Sized), user: EntityId, item: EntityId) -> io::Result<Option<WatchState>> {
    get(tables, Table::Watch, &pair_key(user, item))
}

/// Every watch state of `user`, with its item id.
pub fn watch_states(tables: &(impl KvRead + ?Sized), user: EntityId) -> io::Result<Vec<(EntityId, WatchState)>> {
    tables
        .scan_prefix(Table::Watch, &id_key(user))?
        .iter()
        .map(|(key, value)| {
            Ok((
                crate::codec::key_second_id(key)?,
                decode(Table::Watch.cf_name(), value)?,
            ))
        })
        .collect()
}

/// Every app password of `user`.
pub fn app_passwords(tables: &(impl KvRead + ?Sized), user: EntityId) -> io::Result<Vec<AppPassword>> {
    tables
        .scan_prefix(Table::AppPasswords, &id_key(user))?
        .iter()
        .map(|(_, value)| decode(Table::AppPasswords.cf_name(), value))
        .collect()
}

/// Every member's P2P identity, by node id.
pub fn peers(tables: &(impl KvRead + ?Sized)) -> io::Result<Vec<(NodeId, Peer)>> {
    tables
        .scan_prefix(Table::Peers, &[])?
        .iter()
        .map(|(key, value)| Ok((crate::codec::key_id(key)?, decode(Table::Peers.cf_name(), value)?)))
        .collect()
}

/// Every favourite of `user`, with its item id.
pub fn favorites(tables: &(impl KvRead + ?Sized), user: EntityId) -> io::Result<Vec<(EntityId, Favorite)>> {
    tables
        .scan_prefix(Table::Favorites, &id_key(user))?
        .iter()
        .map(|(key, value)| {
            Ok((
                crate::codec::key_second_id(key)?,
                decode(Table::Favorites.cf_name(), value)?,
            ))
        })
        .collect()
}

/// Whether `user` marked `item` as a favourite, and since when.
pub fn favorite(tables: &(impl KvRead + ?Sized), user: EntityId, item: EntityId) -> io::Result<Option<Favorite>> {
    get(tables, Table::Favorites, &pair_key(user, item))
}

/// A playlist by id.
pub fn playlist(tables: &(impl KvRead + ?Sized), id: EntityId) -> io::Result<Option<Playlist>> {
    get(tables, Table::Playlists, &id_key(id))
}

/// Every playlist, by id.
pub fn playlists(tables: &(impl KvRead + ?Sized)) -> io::Result<Vec<Playlist>> {
    all(tables, Table::Playlists)
}

/// A job by id.
pub fn job(tables: &(impl KvRead + ?Sized), id: EntityId) -> io::Result<Option<Job>> {
    get(tables, Table::Jobs, &id_key(id))
}

/// Every job, by id.
pub fn jobs(tables: &(impl KvRead + ?Sized)) -> io::Result<Vec<Job>> {
    all(tables, Table::Jobs)
}

/// True when a certificate (by its BLAKE3 fingerprint, hex) was revoked.
pub fn is_revoked(tables: &(impl KvRead + ?Sized), fingerprint: &str) -> io::Result<bool> {
    Ok(tables.get(Table::Revoked, fingerprint.as_bytes())?.is_some())
}

/// True when node `id` was removed from the cluster: a certificate of it
/// was revoked. Ids are never reused, so the node stays refused whatever
/// certificate it shows (every member holds the CA and could issue one).
/// The table holds one row per removal, so a scan is cheap.
pub fn is_node_revoked(tables: &(impl KvRead + ?Sized), id: NodeId) -> io::Result<bool> {
    let revoked: Vec<NodeId> = all(tables, Table::Revoked)?;
    Ok(revoked.contains(&id))
}

/// The replicated key that signs tokens, once a leader made one.
pub fn token_key(tables: &(impl KvRead + ?Sized)) -> io::Result<Option<crate::model::TokenKey>> {
    get(tables, Table::Keys, super::rules::TOKEN_KEY)
}

/// Members removed so far: rows of revoked certificates.
pub fn removals(tables: &(impl KvRead + ?Sized)) -> io::Result<u64> {
    let revoked: Vec<NodeId> = all(tables, Table::Revoked)?;
    Ok(revoked.len() as u64)
}

/// True when a join token admitted node `id` (it may speak as a member
/// before the membership lists it: it asks to be added).
pub fn was_admitted(tables: &(impl KvRead + ?Sized), id: NodeId) -> io::Result<bool> {
    let uses: Vec<crate::model::JoinTokenUse> = all(tables, Table::JoinTokens)?;
    Ok(uses.iter().any(|token_use| token_use.node == id))
}

/// A library by id.
pub fn library(tables: &(impl KvRead + ?Sized), id: EntityId) -> io::Result<Option<Library>> {
    get(tables, Table::Libraries, &id_key(id))
}

/// The items of a library, by id.
pub fn library_items(tables: &(impl KvRead + ?Sized), library: EntityId) -> io::Result<Vec<Item>> {
    let mut items = Vec::new();
    for (key, _) in tables.scan_prefix(Table::LibraryItems, &id_key(library))? {
        let id = crate::codec::key_second_id(&key)?;
        if let Some(item) = item(tables, id)? {
            items.push(item);
        }
    }
    Ok(items)
}

/// A page of the items of `kind` in title order, among the libraries
/// `visible` accepts; with the count of all such items.
pub fn items_by_title(
    db: &crate::db::Db,
    kind: crate::model::ItemKind,
    visible: impl Fn(EntityId) -> bool,
    offset: usize,
    limit: usize,
    descending: bool,
) -> io::Result<(Vec<Item>, usize)> {
    let mut matching: Vec<EntityId> = Vec::new();
    let mut total = 0_usize;
    let mut failure = None;
    db.for_each_prefix(Table::ItemOrder, &[kind.tag()], |key, value| {
        let library = match decode::<EntityId>("item order", value) {
            Ok(library) => library,
            Err(error) => {
                failure = Some(error);
                return false;
            }
        };
        if visible(library) {
            // Ascending pages keep only their ids; descending ones need all.
            let in_page = descending || (total >= offset && total < offset.saturating_add(limit));
            let id = key
                .len()
                .checked_sub(8)
                .and_then(|start| <[u8; 8]>::try_from(&key[start..]).ok());
            if let (true, Some(id)) = (in_page, id) {
                matching.push(u64::from_be_bytes(id));
            }
            total += 1;
        }
        true
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    let ids: Vec<EntityId> = if descending {
        matching.iter().rev().skip(offset).take(limit).copied().collect()
    } else {
        matching
    };
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(item) = item(db, id)? {
            items.push(item);
        }
    }
    Ok((items, total))
}

/// When `user` last signed out everywhere (ms since the epoch): access
/// tokens issued before then are refused.
pub fn signed_out_at(tables: &(impl KvRead + ?Sized), user: EntityId) -> io::Result<Option<u64>> {
    get(tables, Table::SignedOut, &id_key(user))
}
