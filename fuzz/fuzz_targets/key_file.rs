//! Key files (`keys/<id>`): a plaintext JSON envelope around the master
//! key, sealed under a key derived from a password with Argon2id.
//!
//! Input: `MODE || rest`.
//! - 0: `rest` is a key file as stored; it is parsed and unwrapped with
//!   the password "pw" (only when its KDF parameters are cheap, or so
//!   absurd that they are refused before any work).
//! - 1: `rest` is master key JSON (what the seal protects), decoded and
//!   checked as the unwrap does.
//! - 2: `rest` is master key JSON sealed in a well-formed key file for
//!   "pw": the whole unwrap runs past authentication.
#![no_main]

use std::sync::OnceLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use rewind_core::crypto::{Crypto, KdfParams, KeyFile, MasterKey};

/// Small enough that an unwrap costs microseconds.
const KDF: KdfParams = KdfParams {
    m_cost_kib: 8,
    t_cost: 1,
    p_cost: 1,
};
const SALT: [u8; 16] = [3; 16];

/// The key-encryption key for "pw" under [`KDF`] and [`SALT`].
fn kek() -> &'static [u8; 32] {
    static K: OnceLock<[u8; 32]> = OnceLock::new();
    K.get_or_init(|| {
        let params = argon2::Params::new(KDF.m_cost_kib, KDF.t_cost, KDF.p_cost, Some(32)).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        a.hash_password_into(b"pw", &SALT, &mut out).unwrap();
        out
    })
}

fn unwrap(kf: &KeyFile) {
    let p = kf.params;
    let cheap = p.m_cost_kib <= 256 && p.t_cost <= 2 && p.p_cost <= 2;
    let refused_early = p.m_cost_kib > 4 * 1024 * 1024 || p.t_cost > 64 || p.p_cost > 64;
    if cheap || refused_early {
        if let Ok(Some(c)) = kf.unwrap_key(b"pw", "fuzz") {
            c.chunker().validate().unwrap();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(kf) = serde_json::from_slice::<KeyFile>(rest) {
                unwrap(&kf);
            }
        }
        1 => {
            if let Ok(mk) = serde_json::from_slice::<MasterKey>(rest) {
                if let Ok(c) = Crypto::new(mk) {
                    c.chunker().validate().unwrap();
                }
            }
        }
        _ => {
            let cipher = XChaCha20Poly1305::new(kek().into());
            let nonce = [5u8; 24];
            let ct = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: rest,
                        aad: b"rewind/key/v1",
                    },
                )
                .unwrap();
            let kf = KeyFile {
                version: 1,
                created: "2026-01-01T00:00:00Z".into(),
                hostname: "h".into(),
                username: "u".into(),
                kdf: "argon2id".into(),
                params: KDF,
                salt: hex::encode(SALT),
                data: hex::encode([&nonce[..], &ct].concat()),
            };
            let json = serde_json::to_vec(&kf).unwrap();
            let kf: KeyFile = serde_json::from_slice(&json).unwrap();
            unwrap(&kf);
        }
    }
});
