//! IMAP's modified UTF-7 for mailbox names (RFC 3501 §5.1.3): printable
//! ASCII as itself (`&` as `&-`), anything else as `&` + base64 of its
//! UTF-16 (with `,` for `/`, no padding) + `-`.

use base64::Engine;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::IMAP_MUTF7,
    base64::engine::general_purpose::NO_PAD,
);

/// A mailbox name as text; `None` when it is not valid modified UTF-7.
// UTF-16 big-endian is what RFC 3501 mandates here.
#[allow(clippy::big_endian_bytes)]
pub fn decode(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('-')?;
        let b64 = &after[..end];
        if b64.is_empty() {
            out.push('&');
        } else {
            let bytes = ENGINE.decode(b64).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Text as a mailbox name.
#[allow(clippy::big_endian_bytes)]
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&ENGINE.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in text.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_rfc_and_back() {
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode("Projekt &ANw-bersicht").unwrap(),
            "Projekt Übersicht"
        );
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode("Tom &- Jerry").unwrap(), "Tom & Jerry");
        for s in ["INBOX", "Entwürfe", "😀 emoji", "a&b", "Привет/мир"] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
        assert_eq!(decode("bad &AB"), None);
    }
}
