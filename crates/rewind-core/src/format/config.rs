//! The repository config: the one plaintext file, read before any key.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Current repository format version.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of `config` (JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Always "rewind".
    pub format: String,
    /// Repository format version.
    pub version: u32,
    /// Random repository id, hex.
    pub id: String,
    /// Creation time, RFC 3339.
    pub created: String,
}

impl Config {
    /// A new config with a random id.
    pub fn new() -> Self {
        let mut id = [0u8; 16];
        crate::crypto::random_bytes(&mut id);
        Config {
            format: "rewind".into(),
            version: FORMAT_VERSION,
            id: hex::encode(id),
            created: jiff::Timestamp::now().to_string(),
        }
    }

    /// Parses and checks a config file.
    pub fn parse(bytes: &[u8], location: &str) -> Result<Self> {
        let c: Config = serde_json::from_slice(bytes).map_err(|e| Error::NoRepository {
            location: location.to_string(),
            reason: format!("its config file is not a rewind config ({e})"),
        })?;
        if c.format != "rewind" {
            return Err(Error::NoRepository {
                location: location.to_string(),
                reason: format!("config names format {:?}, not rewind", c.format),
            });
        }
        // The id names local files (caches, check's cursor): never let a
        // hostile config name a path.
        if c.id.len() != 32 || !c.id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::corrupt(
                "config",
                location,
                format!("its id {:?} is not 32 lowercase hex characters", c.id),
            ));
        }
        if c.version > FORMAT_VERSION || c.version == 0 {
            return Err(Error::UnsupportedVersion {
                found: c.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(c)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_that_could_name_a_path_is_refused() {
        for id in [
            "../../../../tmp/evil",
            "0123456789abcdef0123456789ABCDEF",
            "",
            "0123456789abcdef0123456789abcdef0",
        ] {
            let c = format!(r#"{{"format":"rewind","version":1,"id":"{id}","created":"x"}}"#);
            assert!(
                matches!(
                    Config::parse(c.as_bytes(), "here"),
                    Err(Error::Corrupt { .. })
                ),
                "{id}"
            );
        }
        let ok = Config::new();
        let bytes = serde_json::to_vec(&ok).unwrap();
        assert_eq!(Config::parse(&bytes, "here").unwrap(), ok);
    }
}
