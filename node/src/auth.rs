//! Passwords: argon2id with the crate's recommended parameters, stored as
//! PHC strings (the password itself is never kept).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Longest password accepted, in characters (argon2 handles more; this
/// bounds the work: at most 4 KiB of UTF-8).
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// Hashes a password with a fresh salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    if password.is_empty() || password.chars().count() > PASSWORD_MAX_CHARS {
        anyhow::bail!("a password must be 1 to {PASSWORD_MAX_CHARS} characters");
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("cannot hash the password: {error}"))
}

/// Checks a password against a stored PHC string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

/// Account passwords recently verified, for the protocols that present
/// one on every request (OPDS and Subsonic readers send HTTP Basic or `p=`
/// each time): argon2 takes tens of milliseconds of CPU by design, so a
/// catalog page with fifty covers would cost seconds. An entry is a keyed
/// hash of the user, the stored PHC string and the password (a new
/// password changes the PHC string, so old entries stop matching), kept
/// for [`PasswordCache::TTL`]. Nothing in it reveals a password: the key
/// is random per process.
#[derive(Debug)]
pub struct PasswordCache {
    key: [u8; 32],
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

impl Default for PasswordCache {
    fn default() -> Self {
        use argon2::password_hash::rand_core::RngCore;
        let mut key = [0_u8; 32];
        OsRng.fill_bytes(&mut key);
        PasswordCache {
            key,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl PasswordCache {
    /// How long a verified password is taken without argon2.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(600);
    /// Entries at most.
    const MAX: usize = 4096;

    fn entry(&self, user: u64, stored: &str, password: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&user.to_be_bytes());
        // Lengths first: no two inputs share an encoding.
        hasher.update(&(stored.len() as u64).to_be_bytes());
        hasher.update(stored.as_bytes());
        hasher.update(password.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// True when `password` was verified against `stored` for `user`
    /// within [`PasswordCache::TTL`].
    pub fn recently_verified(&self, user: u64, stored: &str, password: &str) -> bool {
        let entry = self.entry(user, stored, password);
        self.lock()
            .get(&entry)
            .is_some_and(|until| *until > std::time::Instant::now())
    }

    /// Notes that `password` verified against `stored` for `user`.
    pub fn verified(&self, user: u64, stored: &str, password: &str) {
        let entry = self.entry(user, stored, password);
        let now = std::time::Instant::now();
        let mut entries = self.lock();
        if entries.len() >= Self::MAX {
            entries.retain(|_, until| *until > now);
            if entries.len() >= Self::MAX {
                // Every entry is live: start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(entry, now + Self::TTL);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], std::time::Instant>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_password_is_remembered_for_its_user_and_hash_only() {
        let cache = PasswordCache::default();
        assert!(!cache.recently_verified(1, "$argon2id$a", "secret"));
        cache.verified(1, "$argon2id$a", "secret");
        assert!(cache.recently_verified(1, "$argon2id$a", "secret"));
        assert!(!cache.recently_verified(1, "$argon2id$a", "secreT"));
        assert!(!cache.recently_verified(2, "$argon2id$a", "secret"));
        assert!(
            !cache.recently_verified(1, "$argon2id$b", "secret"),
            "a new password hash"
        );
        for user in 0..5000 {
            cache.verified(user, "h", "p");
        }
        assert!(cache.lock().len() <= PasswordCache::MAX);
    }

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let first = hash_password("correct horse").unwrap();
        let second = hash_password("correct horse").unwrap();
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second);
        assert!(verify_password("correct horse", &first));
        assert!(!verify_password("wrong", &first));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(hash_password("").is_err());
    }
}
