//! Passwords: argon2id with the crate's recommended parameters, stored as
//! PHC strings (the password itself is never kept).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Longest password accepted (argon2 handles more; this bounds the work).
pub const PASSWORD_MAX_BYTES: usize = 1024;

/// Hashes a password with a fresh salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    if password.is_empty() || password.len() > PASSWORD_MAX_BYTES {
        anyhow::bail!("a password must be 1 to {PASSWORD_MAX_BYTES} bytes");
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

#[cfg(test)]
mod tests {
    use super::*;

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
