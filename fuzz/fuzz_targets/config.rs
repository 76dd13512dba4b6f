//! `config`: plaintext JSON, read before any key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::format::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Config::parse(data, "fuzz") {
        assert_eq!((c.format.as_str(), c.version), ("rewind", 1));
        let again = serde_json::to_vec(&c).unwrap();
        assert_eq!(Config::parse(&again, "fuzz").unwrap(), c);
    }
});
