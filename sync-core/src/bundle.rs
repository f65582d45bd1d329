//! Bundles: a sync carried on a USB stick or SD card when there is no network at all.
//!
//! A device bundle holds the sync request the device would have sent (every document
//! the server has not acknowledged); a server bundle holds the response a device would
//! have received (every document in its scope changed since its last known cursor).
//! Both are the protocol's own compressed messages, sealed with HMAC-SHA256 under a key
//! both sides hold: SHA-256 of the device's token (the server stores exactly that hash,
//! never the token). A bundle cannot be altered, or made for another device, without the
//! device's credentials, and the server applies it with the same checks as a sync.
//!
//! Layout: magic (4) | device id length (1) | device id | body length (u32 BE) | body | MAC (32)

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const DEVICE_TO_SERVER: &[u8; 4] = b"DDB1";
pub const SERVER_TO_DEVICE: &[u8; 4] = b"DDS1";
/// Refuse to read bundles past this size.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// The MAC key both sides derive: SHA-256 of the device token.
pub fn key_from_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The same key from the hex hash the server stores.
pub fn key_from_token_hash(hex_hash: &str) -> Option<[u8; 32]> {
    hex::decode(hex_hash).ok()?.try_into().ok()
}

fn mac(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    m.update(bytes);
    m.finalize().into_bytes().into()
}

pub fn seal(magic: &[u8; 4], device_id: &str, key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let id = device_id.as_bytes();
    let mut out = Vec::with_capacity(body.len() + id.len() + 41);
    out.extend_from_slice(magic);
    out.push(id.len().min(255) as u8);
    out.extend_from_slice(&id[..id.len().min(255)]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    let tag = mac(key, &out);
    out.extend_from_slice(&tag);
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the file is not a diemdanh bundle of this kind")]
    NotBundle,
    #[error("the bundle is truncated or corrupt")]
    Corrupt,
    #[error("the bundle's seal does not match: it was altered, or made with other credentials")]
    BadSeal,
}

/// A bundle read but not yet verified: who it claims to be from, and its body.
#[derive(Debug, Clone)]
pub struct Unsealed<'a> {
    pub device_id: String,
    pub body: &'a [u8],
    signed: &'a [u8],
    tag: &'a [u8],
}

impl Unsealed<'_> {
    /// Checks the MAC in constant time.
    pub fn verify(&self, key: &[u8; 32]) -> Result<(), BundleError> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| BundleError::BadSeal)?;
        m.update(self.signed);
        m.verify_slice(self.tag).map_err(|_| BundleError::BadSeal)
    }
}

pub fn unseal<'a>(magic: &[u8; 4], bytes: &'a [u8]) -> Result<Unsealed<'a>, BundleError> {
    if bytes.len() < 4 || &bytes[..4] != magic {
        return Err(BundleError::NotBundle);
    }
    let id_len = *bytes.get(4).ok_or(BundleError::Corrupt)? as usize;
    let id_end = 5 + id_len;
    let id = bytes.get(5..id_end).ok_or(BundleError::Corrupt)?;
    let len_bytes: [u8; 4] = bytes
        .get(id_end..id_end + 4)
        .ok_or(BundleError::Corrupt)?
        .try_into()
        .map_err(|_| BundleError::Corrupt)?;
    let body_len = u32::from_be_bytes(len_bytes) as usize;
    let body_start = id_end + 4;
    let body_end = body_start.checked_add(body_len).ok_or(BundleError::Corrupt)?;
    if bytes.len() != body_end + 32 {
        return Err(BundleError::Corrupt);
    }
    Ok(Unsealed {
        device_id: String::from_utf8(id.to_vec()).map_err(|_| BundleError::Corrupt)?,
        body: &bytes[body_start..body_end],
        signed: &bytes[..body_end],
        tag: &bytes[body_end..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_bundle_opens_only_unaltered_and_with_the_right_key() {
        let key = key_from_token("secret-token");
        let sealed = seal(DEVICE_TO_SERVER, "dev1", &key, b"body bytes");
        let u = unseal(DEVICE_TO_SERVER, &sealed).expect("unseal");
        assert_eq!((u.device_id.as_str(), u.body), ("dev1", &b"body bytes"[..]));
        assert_eq!(u.verify(&key), Ok(()));
        assert_eq!(u.verify(&key_from_token("other")), Err(BundleError::BadSeal));
        let server_key = key_from_token_hash(&hex::encode(key)).expect("hex");
        assert_eq!(u.verify(&server_key), Ok(()));
        for i in [0, 4, 7, 12, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let ok = unseal(DEVICE_TO_SERVER, &bad)
                .map(|u| u.verify(&key).is_ok())
                .unwrap_or(false);
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
        assert!(unseal(SERVER_TO_DEVICE, &sealed).is_err());
        assert_eq!(
            unseal(DEVICE_TO_SERVER, &sealed[..sealed.len() - 1]).err(),
            Some(BundleError::Corrupt)
        );
    }
}
