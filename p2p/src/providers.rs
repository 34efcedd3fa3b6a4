//! The DHT's record store: provider records only (Omega keeps no values in
//! the DHT), and a stranger cannot crowd out the cluster's.
//!
//! Members' records (and this peer's own) are kept within the
//! [`MemoryStore`]'s bounds, which strangers' records never count against.
//! A non-member (a seeding client) is a *guest*: its record is kept only
//! within a budget of guest records in all, per guest, and per key, and a
//! key no member provides (a blob only guests announce, e.g. an item's
//! file that its holder does not announce) gets only a small share of that
//! budget, so junk keys cannot take the room of seeders of the cluster's
//! own sets. Guests' addresses are trimmed; expired guest records are
//! dropped when a budget is reached (kad removes others' expired records
//! only when a key is asked for).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Tells the cluster's members from everyone else.
pub(crate) type Membership = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

/// Bounds on what the store keeps.
#[derive(Debug, Clone)]
pub(crate) struct ProviderLimits {
    /// Keys members and this peer may have records for.
    pub(crate) member_keys_max: usize,
    /// Members' records per key (Kademlia's replication factor).
    pub(crate) member_providers_per_key_max: usize,
    /// Guests' records in all.
    pub(crate) guest_records_max: usize,
    /// Guests' records for keys no member provides.
    pub(crate) unannounced_records_max: usize,
    /// Records one guest may hold.
    pub(crate) records_per_guest_max: usize,
    /// Guests' records per key.
    pub(crate) guests_per_key_max: usize,
    /// Addresses kept per guest record.
    pub(crate) addresses_per_record_max: usize,
    /// An address longer than this is dropped from a guest's record.
    pub(crate) address_bytes_max: usize,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            member_keys_max: 100_000,
            member_providers_per_key_max: 20,
            // About 1 KiB each at most (8 addresses of 128 bytes): 16 MiB.
            guest_records_max: 16_384,
            unannounced_records_max: 4096,
            records_per_guest_max: 256,
            guests_per_key_max: 16,
            addresses_per_record_max: 8,
            address_bytes_max: 128,
        }
    }
}

/// A guest's record the store holds.
#[derive(Debug, Clone, Copy)]
struct Guest {
    expires: Option<Instant>,
    /// Taken for a key no member provided at the time.
    unannounced: bool,
}

/// Provider records, members first (see the module docs).
pub(crate) struct ProviderStore {
    inner: MemoryStore,
    local: PeerId,
    is_member: Membership,
    limits: ProviderLimits,
    guests: HashMap<(RecordKey, PeerId), Guest>,
    records_per_guest: HashMap<PeerId, usize>,
    unannounced: usize,
}

impl ProviderStore {
    pub(crate) fn new(local: PeerId, is_member: Membership, limits: ProviderLimits) -> Self {
        let config = MemoryStoreConfig {
            // Values are refused before they reach the inner store.
            max_records: 0,
            max_value_bytes: 0,
            // Guests add keys and providers only within their own budget,
            // so members always find the room these bounds promise.
            max_provided_keys: limits.member_keys_max + limits.unannounced_records_max,
            max_providers_per_key: limits.member_providers_per_key_max + limits.guests_per_key_max,
        };
        ProviderStore {
            inner: MemoryStore::with_config(local, config),
            local,
            is_member,
            limits,
            guests: HashMap::new(),
            records_per_guest: HashMap::new(),
            unannounced: 0,
        }
    }

    /// Guests' records held (for tests and metrics).
    #[cfg(test)]
    fn guest_records(&self) -> usize {
        self.guests.len()
    }

    /// Keeps a guest's record when its budgets allow; a refused record is
    /// dropped quietly, as the inner store drops providers past its bound.
    fn add_guest(&mut self, mut record: ProviderRecord) -> Result<()> {
        let limits = &self.limits;
        record
            .addresses
            .retain(|address| address.len() <= limits.address_bytes_max);
        record.addresses.truncate(limits.addresses_per_record_max);
        let place = (record.key.clone(), record.provider);
        if let Some(guest) = self.guests.get_mut(&place) {
            // A guest announcing again: the record is refreshed in place.
            guest.expires = record.expires;
            return self.inner.add_provider(record);
        }
        let (announced, guests_on_key) = self.key_census(&record.key);
        if !self.has_room(&record.provider, announced, guests_on_key) {
            self.drop_expired();
            let (announced, guests_on_key) = self.key_census(&record.key);
            if !self.has_room(&record.provider, announced, guests_on_key) {
                metrics::counter!("omega_p2p_refused_total", "reason" => "provider_record").increment(1);
                return Ok(());
            }
        }
        let guest = Guest {
            expires: record.expires,
            unannounced: !announced,
        };
        let provider = record.provider;
        self.inner.add_provider(record)?;
        self.guests.insert(place, guest);
        *self.records_per_guest.entry(provider).or_default() += 1;
        self.unannounced += usize::from(guest.unannounced);
        Ok(())
    }

    /// Whether a member (or this peer) provides `key`, and how many
    /// guests' records it has.
    fn key_census(&self, key: &RecordKey) -> (bool, usize) {
        let records = self.inner.providers(key);
        let guests = records
            .iter()
            .filter(|record| self.guests.contains_key(&(key.clone(), record.provider)))
            .count();
        (guests < records.len(), guests)
    }

    fn has_room(&self, guest: &PeerId, announced: bool, guests_on_key: usize) -> bool {
        let limits = &self.limits;
        let held = self.records_per_guest.get(guest).copied().unwrap_or(0);
        self.guests.len() < limits.guest_records_max
            && held < limits.records_per_guest_max
            && guests_on_key < limits.guests_per_key_max
            && (announced || self.unannounced < limits.unannounced_records_max)
    }

    /// Drops the guests' records that have expired.
    fn drop_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<(RecordKey, PeerId)> = self
            .guests
            .iter()
            .filter(|(_, guest)| guest.expires.is_some_and(|expires| expires <= now))
            .map(|(place, _)| place.clone())
            .collect();
        for (key, provider) in expired {
            self.remove_provider(&key, &provider);
        }
    }

    fn forget_guest(&mut self, key: &RecordKey, provider: &PeerId) {
        let Some(guest) = self.guests.remove(&(key.clone(), *provider)) else {
            return;
        };
        self.unannounced -= usize::from(guest.unannounced);
        if let Some(held) = self.records_per_guest.get_mut(provider) {
            *held -= 1;
            if *held == 0 {
                self.records_per_guest.remove(provider);
            }
        }
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(key)
    }

    fn put(&mut self, _: Record) -> Result<()> {
        // Omega's DHT carries provider records only: a value put by
        // anyone would be bytes this peer holds for nothing.
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, key: &RecordKey) {
        self.inner.remove(key);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.local || (self.is_member)(&record.provider) {
            return self.inner.add_provider(record);
        }
        self.add_guest(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.inner.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        self.inner.remove_provider(key, provider);
        self.forget_guest(key, provider);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// A store whose members are `members`, with small guest budgets.
    fn store(members: &[PeerId]) -> ProviderStore {
        let members = members.to_vec();
        let limits = ProviderLimits {
            member_keys_max: 8,
            member_providers_per_key_max: 4,
            guest_records_max: 6,
            unannounced_records_max: 2,
            records_per_guest_max: 3,
            guests_per_key_max: 2,
            addresses_per_record_max: 2,
            address_bytes_max: 64,
        };
        ProviderStore::new(PeerId::random(), Arc::new(move |peer| members.contains(peer)), limits)
    }

    fn record(key: u8, provider: PeerId, ttl: Duration) -> ProviderRecord {
        let address: libp2p::Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        ProviderRecord {
            key: RecordKey::new(&[key; 32]),
            provider,
            expires: Some(Instant::now() + ttl),
            addresses: vec![address; 5],
        }
    }

    fn holds(store: &ProviderStore, key: u8, provider: PeerId) -> bool {
        let key = RecordKey::new(&[key; 32]);
        store.providers(&key).iter().any(|record| record.provider == provider)
    }

    const LONG: Duration = Duration::from_secs(600);

    #[test]
    fn strangers_flooding_junk_keys_leave_room_for_members_and_seeders_of_announced_keys() {
        let member = PeerId::random();
        let mut store = store(&[member]);
        // Eight throwaway identities, each announcing junk keys.
        for (index, stranger) in (0..8).map(|_| PeerId::random()).enumerate() {
            for key in 0..3 {
                store
                    .add_provider(record(100 + (index * 3 + key) as u8, stranger, LONG))
                    .unwrap();
            }
        }
        assert_eq!(store.guest_records(), 2, "junk keys get a small share only");
        // Every member key still fits, and a seeder of a member's key is kept.
        for key in 0..8 {
            store.add_provider(record(key, member, LONG)).unwrap();
            assert!(holds(&store, key, member), "member key {key}");
        }
        let seeder = PeerId::random();
        store.add_provider(record(0, seeder, LONG)).unwrap();
        assert!(holds(&store, 0, seeder));
        // A value is never kept.
        let value = Record::new(RecordKey::new(&[1; 32]), vec![0; 10]);
        assert!(store.put(value).is_err());
    }

    #[test]
    fn guests_are_bounded_per_key_per_guest_and_in_all() {
        let member = PeerId::random();
        let mut store = store(&[member]);
        for key in 0..4 {
            store.add_provider(record(key, member, LONG)).unwrap();
        }
        let (one, two, three) = (PeerId::random(), PeerId::random(), PeerId::random());
        for guest in [one, two, three] {
            store.add_provider(record(0, guest, LONG)).unwrap();
        }
        assert!(holds(&store, 0, one) && holds(&store, 0, two));
        assert!(!holds(&store, 0, three), "two guests per key");
        for key in 1..4 {
            store.add_provider(record(key, one, LONG)).unwrap();
        }
        assert!(!holds(&store, 3, one), "three records per guest");
        // Announcing again refreshes a record instead of adding one.
        store.add_provider(record(1, one, LONG)).unwrap();
        assert_eq!(store.guest_records(), 4);
        // A member's record is kept even where guests fill their share.
        let late = PeerId::random();
        let mut store_with_late = store;
        store_with_late.is_member = Arc::new(move |peer| *peer == member || *peer == late);
        store_with_late.add_provider(record(0, late, LONG)).unwrap();
        assert!(holds(&store_with_late, 0, late));
        // Addresses of guests are trimmed.
        let kept = store_with_late.providers(&RecordKey::new(&[0; 32]));
        let guest = kept.iter().find(|record| record.provider == one).unwrap();
        assert_eq!(guest.addresses.len(), 2);
    }

    #[test]
    fn expired_guest_records_make_room_and_removal_frees_the_budget() {
        let mut store = store(&[]);
        let (one, two) = (PeerId::random(), PeerId::random());
        store.add_provider(record(1, one, Duration::ZERO)).unwrap();
        store.add_provider(record(2, one, LONG)).unwrap();
        assert_eq!(store.guest_records(), 2);
        // The unannounced share is full; the expired record gives way.
        store.add_provider(record(3, two, LONG)).unwrap();
        assert!(holds(&store, 3, two));
        assert!(!holds(&store, 1, one));
        store.remove_provider(&RecordKey::new(&[2; 32]), &one);
        assert_eq!(store.guest_records(), 1);
        store.add_provider(record(4, one, LONG)).unwrap();
        assert!(holds(&store, 4, one));
    }
}
