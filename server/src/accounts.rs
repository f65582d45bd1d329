//! Web accounts of the province and district organisers: argon2 password hashes,
//! random session tokens stored hashed. An account sees the subtree of its unit only.
//!
//! Why argon2 with the crate's defaults (argon2id, 19 MiB, 2 passes): it is the OWASP
//! minimum and costs about 30-60 ms here, paid once per sign-in, never per page.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sync_core::units::UnitTree;

use crate::api::hash_secret;
use crate::store::{Store, StoreError};

/// How long a sign-in lasts (a working day).
pub const SESSION_SECONDS: i64 = 8 * 3600;
pub const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("an account named {0} exists already")]
    Exists(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Names are what people type at sign-in: 1-64 letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "an account name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ))
    }
}

pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::Invalid(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::Invalid(format!(
            "a password has at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(e.to_string()))
}

/// False for a wrong password and for a hash that does not parse.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A hash nobody's password matches, verified when the name is unknown so that a
/// guesser cannot tell names from timings.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&crate::api::new_code()).unwrap_or_default())
}

/// Creates an account (`user add`), or with `replace` resets its unit and password.
pub fn add(store: &dyn Store, name: &str, unit: &str, password: &str, replace: bool) -> Result<String, AccountError> {
    check_name(name)?;
    check_password(password)?;
    let unit = UnitTree::reference()
        .resolve(unit)
        .map_err(|e| AccountError::Invalid(e.0))?;
    let hash = hash_password(password)?;
    let unit = unit.key.to_string();
    if store.put_account(name, &unit, &hash, crate::api::now(), replace)? {
        Ok(unit)
    } else {
        Err(AccountError::Exists(name.to_string()))
    }
}

/// A new session token (256 bits) and the hash the store keeps.
pub fn new_session_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let hash = hash_secret(&token);
    (token, hash)
}

/// The CSRF token of a session: derived from the session token, so it needs no storage
/// and is worthless without the cookie (which another site's page cannot read).
pub fn csrf_for(session_token: &str) -> String {
    hash_secret(&format!("csrf:{session_token}"))
}

/// Equality that takes the same time wherever the strings differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let h = hash_password("đúng mật khẩu 123").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("đúng mật khẩu 123", &h));
        assert!(!verify_password("sai mật khẩu 123", &h));
        assert!(!verify_password("đúng mật khẩu 123", "not a hash"));
        assert!(!verify_password("anything", decoy_hash()));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("so-noi-vu.laichau").is_ok());
        assert!(check_name("Nguyễn").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("<script>").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough!").is_ok());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
