//! Reads of the state machine's tables. They see what this node applied;
//! callers wanting linearizable reads first wait for a read index
//! (`Cluster::read`), browsing may skip that (`Consistency::Stale`).

use std::io;

use serde::de::DeserializeOwned;

use super::tables::{KvRead, Table};
use crate::codec::{decode, id_key, pair_key};
use crate::model::{ApiKey, EntityId, Hash, Item, Job, Library, RefreshToken, User, WatchState};

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
