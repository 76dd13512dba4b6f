//! Keys and encryption: see docs/DESIGN.md, "Keys and encryption".
//!
//! - Every stored object is sealed with XChaCha20-Poly1305 under the
//!   repository's master encryption key, with a random 192-bit nonce (random
//!   nonces of that size are safe for any realistic number of objects).
//!   Sealed layout: `nonce (24) || ciphertext || tag (16)`.
//! - The associated data binds a sealed object to its role: a data or tree
//!   blob to its own id, other objects to a fixed domain string, so a blob
//!   cannot be swapped for another one, nor an index for a snapshot.
//! - Blob ids are BLAKE3 keyed by a second secret, so they reveal nothing of
//!   the content to someone without the key.
//! - The master key is wrapped, once per password, by a key derived with
//!   Argon2id; see [`KeyFile`].

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, Hash};

/// Length of the nonce prefix of a sealed object.
pub const NONCE_LEN: usize = 24;
/// Length of the authentication tag suffix.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fills `buf` with random bytes from the OS.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}

/// Parameters of the content-defined chunker, fixed per repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Seed of the FastCDC gear table (a secret: it hides chunk boundaries).
    pub seed: u64,
    /// Minimum chunk size in bytes.
    pub min_size: u32,
    /// Average (target) chunk size.
    pub avg_size: u32,
    /// Maximum chunk size.
    pub max_size: u32,
}

impl ChunkerParams {
    /// Sizes chosen by measurement (docs/DESIGN.md, "Chunking").
    pub fn new_random() -> Self {
        let mut seed = [0u8; 8];
        random_bytes(&mut seed);
        ChunkerParams {
            seed: u64::from_le_bytes(seed),
            min_size: 64 * 1024,
            avg_size: 256 * 1024,
            max_size: 1024 * 1024,
        }
    }

    /// Checks the sizes against FastCDC's limits, so that bad key material
    /// yields an error and not a panic.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt(
                "key",
                "master key",
                format!("invalid chunker parameters {self:?}"),
            ))
        }
    }
}

/// The repository's secrets, the same for every password.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    /// XChaCha20-Poly1305 key for every object.
    #[serde(with = "hex_array")]
    pub encryption: [u8; 32],
    /// BLAKE3 key for blob ids.
    #[serde(with = "hex_array")]
    pub id_key: [u8; 32],
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Plain BLAKE3 (hex) of the repository's `config` file, which is
    /// stored in clear: binding it here makes any change to it detected
    /// when the repository is opened. Absent in keys of repositories made
    /// before the binding (docs/DESIGN.md §3.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// What a sealed object is, bound into its associated data.
#[derive(Clone, Copy, Debug)]
pub enum Domain<'a> {
    /// A data or tree blob: bound to its id.
    Blob(&'a BlobId),
    /// A pack header.
    PackHeader,
    /// An index file.
    Index,
    /// A snapshot file.
    Snapshot,
    /// The master key inside a key file.
    KeyFile,
    /// The stored retention policy.
    Policy,
    /// Prune's record of packs waiting to be deleted.
    PruneState,
    /// A marker announcing a running backup or prune.
    Running,
    /// A restore test's result.
    Proof,
}

impl Domain<'_> {
    fn aad(&self) -> Vec<u8> {
        match self {
            Domain::Blob(id) => {
                let mut v = b"rewind/blob/v1/".to_vec();
                v.extend_from_slice(id.as_bytes());
                v
            }
            Domain::PackHeader => b"rewind/pack-header/v1".to_vec(),
            Domain::Index => b"rewind/index/v1".to_vec(),
            Domain::Snapshot => b"rewind/snapshot/v1".to_vec(),
            Domain::KeyFile => b"rewind/key/v1".to_vec(),
            Domain::Policy => b"rewind/policy/v1".to_vec(),
            Domain::PruneState => b"rewind/prune-state/v1".to_vec(),
            Domain::Running => b"rewind/running/v1".to_vec(),
            Domain::Proof => b"rewind/proof/v1".to_vec(),
        }
    }
}

fn seal_with(cipher: &XChaCha20Poly1305, domain: Domain<'_>, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce);
    let aad = domain.aad();
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &XChaCha20Poly1305, domain: Domain<'_>, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let aad = domain.aad();
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
        .ok()
}

/// A master key ready for use (cipher state built once).
#[derive(Clone)]
pub struct Crypto {
    key: MasterKey,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(..)")
    }
}

impl Crypto {
    /// Wraps a master key.
    pub fn new(key: MasterKey) -> Result<Self> {
        key.chunker.validate()?;
        let cipher = XChaCha20Poly1305::new((&key.encryption).into());
        Ok(Crypto { key, cipher })
    }

    /// A fresh random master key.
    pub fn generate() -> Self {
        let mut encryption = [0u8; 32];
        let mut id_key = [0u8; 32];
        random_bytes(&mut encryption);
        random_bytes(&mut id_key);
        Crypto::new(MasterKey {
            encryption,
            id_key,
            chunker: ChunkerParams::new_random(),
            config: None,
        })
        .expect("fresh chunker parameters are valid")
    }

    /// Binds the master key to the bytes of the repository's config (done
    /// once, by `init`, before any key file is written).
    pub fn bind_config(&mut self, config_bytes: &[u8]) {
        self.key.config = Some(crate::id::Hash::of(config_bytes).to_hex());
    }

    /// The master key (to wrap it in a key file).
    pub fn master_key(&self) -> &MasterKey {
        &self.key
    }

    /// A key for data this machine keeps about the repository (the
    /// on-disk index table's MACs): derived from the master key and
    /// `context`, so that only a holder of the key makes one that passes.
    pub fn local_key(&self, context: &str) -> [u8; 32] {
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(&self.key.encryption);
        material[32..].copy_from_slice(&self.key.id_key);
        blake3::derive_key(context, &material)
    }

    /// Chunker parameters of the repository.
    pub fn chunker(&self) -> ChunkerParams {
        self.key.chunker
    }

    /// The id of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(Hash(
            *blake3::keyed_hash(&self.key.id_key, plaintext).as_bytes(),
        ))
    }

    /// Seals `plaintext` for `domain`.
    pub fn seal(&self, domain: Domain<'_>, plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, domain, plaintext)
    }

    /// Seals in place: `buf[..NONCE_LEN]` is a placeholder for the nonce and
    /// the rest is the plaintext; on return `buf` is the sealed object.
    pub fn seal_in_place(&self, domain: Domain<'_>, buf: &mut Vec<u8>) {
        use chacha20poly1305::aead::AeadInPlace;
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &domain.aad(),
                &mut buf[NONCE_LEN..],
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        buf.extend_from_slice(&tag);
    }

    /// Opens a sealed object; `None` if it fails authentication.
    pub fn open(&self, domain: Domain<'_>, sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.cipher, domain, sealed)
    }
}

/// Argon2id parameters of a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.2 s here, per OWASP's Argon2id advice.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        // Bounds keep a hostile key file from asking for absurd memory or time.
        if self.m_cost_kib > 4 * 1024 * 1024
            || self.t_cost > 64
            || self.p_cost > 64
            || salt.len() < 16
            || salt.len() > 64
        {
            return Err(Error::corrupt(
                "key",
                "key file",
                format!("unacceptable KDF parameters {self:?}"),
            ));
        }
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::corrupt("key", "key file", format!("bad KDF parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|e| Error::corrupt("key", "key file", format!("KDF failed: {e}")))?;
        Ok(out)
    }
}

/// A key file: the master key wrapped by a password (stored as JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version of key files (1).
    pub version: u32,
    /// When the key was added (RFC 3339).
    pub created: String,
    /// Host that added it.
    pub hostname: String,
    /// User that added it.
    pub username: String,
    /// KDF algorithm; only "argon2id".
    pub kdf: String,
    /// KDF parameters.
    pub params: KdfParams,
    /// Salt, hex.
    pub salt: String,
    /// Sealed master key JSON, hex.
    pub data: String,
}

impl KeyFile {
    /// Wraps `crypto`'s master key with `password`.
    pub fn wrap(
        crypto: &Crypto,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<Self> {
        let mut salt = [0u8; 32];
        random_bytes(&mut salt);
        let kek = params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new((&kek).into());
        let plain = serde_json::to_vec(crypto.master_key()).expect("master key serializes");
        let sealed = seal_with(&cipher, Domain::KeyFile, &plain);
        Ok(KeyFile {
            version: 1,
            created: jiff::Timestamp::now().to_string(),
            hostname: hostname.to_string(),
            username: username.to_string(),
            kdf: "argon2id".to_string(),
            params,
            salt: hex::encode(salt),
            data: hex::encode(sealed),
        })
    }

    /// Unwraps the master key; `Ok(None)` when the password does not fit.
    pub fn unwrap_key(&self, password: &[u8], name: &str) -> Result<Option<Crypto>> {
        if self.version != 1 || self.kdf != "argon2id" {
            return Err(Error::corrupt(
                "key",
                name,
                format!(
                    "unknown key file version {} / kdf {}",
                    self.version, self.kdf
                ),
            ));
        }
        let salt = hex::decode(&self.salt).map_err(|e| Error::corrupt("key", name, e))?;
        let sealed = hex::decode(&self.data).map_err(|e| Error::corrupt("key", name, e))?;
        let kek = self.params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new((&kek).into());
        let Some(plain) = open_with(&cipher, Domain::KeyFile, &sealed) else {
            return Ok(None);
        };
        let key: MasterKey =
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt("key", name, e))?;
        Crypto::new(key).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn key_file_wrong_password_is_none() {
        let c = Crypto::generate();
        let kf = KeyFile::wrap(&c, b"right", FAST, "h", "u").unwrap();
        assert!(kf.unwrap_key(b"wrong", "k").unwrap().is_none());
        let back = kf.unwrap_key(b"right", "k").unwrap().unwrap();
        assert_eq!(back.master_key().encryption, c.master_key().encryption);
    }

    #[test]
    fn hostile_kdf_params_are_refused() {
        let c = Crypto::generate();
        let mut kf = KeyFile::wrap(&c, b"pw", FAST, "h", "u").unwrap();
        kf.params.m_cost_kib = u32::MAX;
        assert!(matches!(
            kf.unwrap_key(b"pw", "k"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn domains_are_not_interchangeable() {
        let c = Crypto::generate();
        let id = c.blob_id(b"a");
        let other = c.blob_id(b"b");
        let sealed = c.seal(Domain::Blob(&id), b"a");
        assert!(c.open(Domain::Blob(&other), &sealed).is_none());
        assert!(c.open(Domain::Index, &sealed).is_none());
        assert_eq!(c.open(Domain::Blob(&id), &sealed).unwrap(), b"a");
        assert!(c.open(Domain::Index, &[0u8; 10]).is_none());
    }

    #[test]
    fn ids_are_keyed() {
        let a = Crypto::generate();
        let b = Crypto::generate();
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_eq!(a.blob_id(b"same"), a.blob_id(b"same"));
    }

    proptest! {
        #[test]
        fn seal_open_round_trip_and_any_flipped_bit_fails(data in proptest::collection::vec(any::<u8>(), 0..2000), bit in any::<prop::sample::Index>()) {
            let c = Crypto::generate();
            let sealed = c.seal(Domain::Snapshot, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(c.open(Domain::Snapshot, &sealed).unwrap(), data);
            let mut bad = sealed.clone();
            let i = bit.index(bad.len() * 8);
            bad[i / 8] ^= 1 << (i % 8);
            prop_assert!(c.open(Domain::Snapshot, &bad).is_none());
        }
    }
}
