//! The state machine's tables (RocksDB column families) and a view that
//! reads through pending writes, so that one applied batch sees its own
//! earlier commands.

use std::collections::BTreeMap;
use std::io;

/// A table of the state machine. Each is a RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Applied log id, membership, the id counter.
    Meta,
    /// id → `User`.
    Users,
    /// lower-cased name → id.
    UserNames,
    /// secret hash → `RefreshToken`.
    RefreshTokens,
    /// secret hash → `ApiKey`.
    ApiKeys,
    /// id → `Library`.
    Libraries,
    /// lower-cased name → id.
    LibraryNames,
    /// id → `Item`.
    Items,
    /// natural key → id.
    ItemKeys,
    /// parent ++ child → ().
    ItemChildren,
    /// library ++ item → ().
    LibraryItems,
    /// user ++ item → `WatchState`.
    Watch,
    /// id → `Job`.
    Jobs,
    /// token id → `JoinTokenUse`.
    JoinTokens,
    /// certificate fingerprint (hex) → node id: certificates of removed
    /// members, refused by the transport.
    Revoked,
    /// kind tag ++ sort title ++ 0 ++ item id → library id: items of a
    /// kind in title order, for listing pages without sorting.
    ItemOrder,
    /// user ++ id → `AppPassword`.
    AppPasswords,
    /// user ++ item → `Favorite`.
    Favorites,
    /// id → `Playlist`.
    Playlists,
    /// node id → `Peer`: members on the P2P data plane.
    Peers,
    /// family id (the hash of its first token) → `RefreshFamily`: the
    /// refresh tokens one sign-in rotated through.
    RefreshFamilies,
    /// refresh token hash → family id, for every token of a family.
    RefreshLineage,
    /// user → when it last signed out everywhere (ms since the epoch, u64):
    /// access tokens issued before then are refused.
    SignedOut,
    /// name → secret: the key that signs tokens (`token` → `TokenKey`).
    Keys,
}

impl Table {
    /// Every table, in snapshot order.
    pub const ALL: [Table; 24] = [
        Table::Meta,
        Table::Users,
        Table::UserNames,
        Table::RefreshTokens,
        Table::ApiKeys,
        Table::Libraries,
        Table::LibraryNames,
        Table::Items,
        Table::ItemKeys,
        Table::ItemChildren,
        Table::LibraryItems,
        Table::Watch,
        Table::Jobs,
        Table::JoinTokens,
        Table::Revoked,
        Table::ItemOrder,
        Table::AppPasswords,
        Table::Favorites,
        Table::Playlists,
        Table::Peers,
        Table::RefreshFamilies,
        Table::RefreshLineage,
        Table::SignedOut,
        Table::Keys,
    ];

    /// Its column family's name.
    pub fn cf_name(self) -> &'static str {
        match self {
            Table::Meta => "sm_meta",
            Table::Users => "sm_users",
            Table::UserNames => "sm_user_names",
            Table::RefreshTokens => "sm_refresh_tokens",
            Table::ApiKeys => "sm_api_keys",
            Table::Libraries => "sm_libraries",
            Table::LibraryNames => "sm_library_names",
            Table::Items => "sm_items",
            Table::ItemKeys => "sm_item_keys",
            Table::ItemChildren => "sm_item_children",
            Table::LibraryItems => "sm_library_items",
            Table::Watch => "sm_watch",
            Table::Jobs => "sm_jobs",
            Table::JoinTokens => "sm_join_tokens",
            Table::Revoked => "sm_revoked",
            Table::ItemOrder => "sm_item_order",
            Table::AppPasswords => "sm_app_passwords",
            Table::Favorites => "sm_favorites",
            Table::Playlists => "sm_playlists",
            Table::Peers => "sm_peers",
            Table::RefreshFamilies => "sm_refresh_families",
            Table::RefreshLineage => "sm_refresh_lineage",
            Table::SignedOut => "sm_signed_out",
            Table::Keys => "sm_keys",
        }
    }

    /// Its tag in snapshot files (the position in [`Table::ALL`]).
    pub fn tag(self) -> u8 {
        // Invariant: ALL lists every variant, so the search always succeeds.
        Table::ALL
            .iter()
            .position(|table| *table == self)
            .map_or_else(|| unreachable!("Table::ALL lists every table"), |index| index as u8)
    }

    /// The table of a snapshot tag.
    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.get(usize::from(tag)).copied()
    }
}

/// Read access to the tables.
pub trait KvRead {
    /// The value at `key`.
    fn get(&self, table: Table, key: &[u8]) -> io::Result<Option<Vec<u8>>>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// Pending writes over a [`KvRead`]: reads see the writes.
#[derive(Debug)]
pub struct Overlay<'a, R: KvRead + ?Sized> {
    base: &'a R,
    writes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a, R: KvRead + ?Sized> Overlay<'a, R> {
    /// No writes yet.
    pub fn new(base: &'a R) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }

    /// Writes `value` at `key`.
    pub fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.writes.insert((table, key.to_vec()), Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.writes.insert((table, key.to_vec()), None);
    }

    /// The pending writes, in table and key order (`None`: delete).
    pub fn into_writes(self) -> BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>> {
        self.writes
    }
}

impl<R: KvRead + ?Sized> KvRead for Overlay<'_, R> {
    fn get(&self, table: Table, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match self.writes.get(&(table, key.to_vec())) {
            Some(value) => Ok(value.clone()),
            None => self.base.get(table, key),
        }
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.base.scan_prefix(table, prefix)?.into_iter().collect();
        let from = (table, prefix.to_vec());
        for ((written_table, key), value) in self.writes.range(from..) {
            if *written_table != table || !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }
}

/// Tables in memory: the base of property tests and of the simulator's
/// fast path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemTables {
    rows: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
}

impl MemTables {
    /// Every row, in table and key order.
    pub fn rows(&self) -> impl Iterator<Item = (Table, &[u8], &[u8])> {
        self.rows
            .iter()
            .map(|((table, key), value)| (*table, key.as_slice(), value.as_slice()))
    }

    /// Writes one row.
    pub fn insert(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.rows.insert((table, key), value);
    }

    /// Applies an overlay's writes.
    pub fn apply(&mut self, writes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>) {
        for (key, value) in writes {
            match value {
                Some(value) => self.rows.insert(key, value),
                None => self.rows.remove(&key),
            };
        }
    }
}

impl KvRead for MemTables {
    fn get(&self, table: Table, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.rows.get(&(table, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .rows
            .range((table, prefix.to_vec())..)
            .take_while(|((row_table, key), _)| *row_table == table && key.starts_with(prefix))
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect())
    }
}
