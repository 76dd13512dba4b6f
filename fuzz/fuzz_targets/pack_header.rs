//! Packs (`data/XX/<id>`): magic, version, blobs, sealed postcard header,
//! header length. The header is read whole (`check --read-data`) or alone
//! from the end of the pack (`repair index`, prune).
//!
//! Input: `MODE || rest`. Even: `rest` is a whole pack as stored. Odd:
//! `rest` = `filler length (u16 LE) || header plaintext`; the target builds
//! a pack of that much filler and the header sealed with the fixed key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::crypto::Domain;
use rewind_core::format::pack::{PackHeader, MAGIC, MAX_BLOB_SIZE, PREFIX_LEN, VERSION};
use rewind_core::id::{Hash, PackId};
use rewind_fuzz::crypto;

fn check(h: &PackHeader, pack_size: u64, sealed_len: u64) {
    // The blobs fill the pack from the prefix to the header.
    let mut at = PREFIX_LEN;
    for b in &h.blobs {
        assert_eq!(u64::from(b.offset), at);
        assert!(b.raw_length <= MAX_BLOB_SIZE);
        at += u64::from(b.length);
    }
    assert_eq!(at + sealed_len + 4, pack_size);
    let plain = postcard::to_stdvec(h).unwrap();
    assert_eq!(&postcard::from_bytes::<PackHeader>(&plain).unwrap(), h);
}

/// Both ways of reading a pack's header.
fn read(pack: &[u8]) {
    let c = crypto();
    let id = PackId(Hash::of(pack));
    let whole = PackHeader::parse(c, &id, pack);
    let n = pack.len();
    if n >= 4 {
        let hlen = PackHeader::header_len(pack[n - 4..].try_into().unwrap()) as usize;
        if hlen + 4 <= n {
            let sealed = &pack[n - 4 - hlen..n - 4];
            let alone = PackHeader::parse_header(c, &id, n as u64, sealed);
            if let Ok(h) = &alone {
                check(h, n as u64, hlen as u64);
                // Alone it does not check the magic; whole it does.
                if pack[..8.min(n)] == MAGIC[..] && n > 8 && pack[8] == VERSION {
                    assert_eq!(whole.as_ref().ok(), Some(h));
                }
            }
        }
    }
    if let Ok(h) = &whole {
        assert!(n >= 13 && &pack[..8] == MAGIC && pack[8] == VERSION);
        let hlen = u32::from_le_bytes(pack[n - 4..].try_into().unwrap());
        check(h, n as u64, u64::from(hlen));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        read(rest);
        return;
    }
    if rest.len() < 2 {
        return;
    }
    let filler = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
    let sealed = crypto().seal(Domain::PackHeader, &rest[2..]);
    let mut pack = Vec::with_capacity(9 + filler + sealed.len() + 4);
    pack.extend_from_slice(MAGIC);
    pack.push(VERSION);
    pack.resize(9 + filler, 0);
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    read(&pack);
});
