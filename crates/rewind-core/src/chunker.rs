//! Content-defined chunking with FastCDC (2020), seeded per repository.
//!
//! Files no larger than the maximum chunk size are read whole and cut in
//! memory; larger ones are streamed, so memory stays bounded by a few
//! maximum-size chunks whatever the file size.

use std::io::{Cursor, Read};

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

use crate::crypto::ChunkerParams;

/// Cuts everything `reader` yields into chunks and calls `f` on each, in
/// order. Returns the number of bytes read.
///
/// # Errors
/// An I/O error of the reader, or the first error of `f`.
pub fn chunk_stream<R: Read, E: From<std::io::Error>>(
    params: &ChunkerParams,
    mut reader: R,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let max = params.max_size as usize;
    // One buffer per thread, reused for every small file: no allocation churn.
    thread_local! {
        static HEAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut head = HEAD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    head.clear();
    head.reserve(max + 1);
    (&mut reader).take(max as u64 + 1).read_to_end(&mut head)?;
    if head.len() <= max {
        let mut result = Ok(head.len() as u64);
        let cuts = FastCDC::with_level_and_seed(
            &head,
            params.min_size as usize,
            params.avg_size as usize,
            max,
            Normalization::Level1,
            params.seed,
        );
        for c in cuts {
            if let Err(e) = f(&head[c.offset..c.offset + c.length]) {
                result = Err(e);
                break;
            }
        }
        HEAD.with(|h| *h.borrow_mut() = head);
        return result;
    }
    let source = Cursor::new(head).chain(reader);
    let mut total = 0;
    for chunk in StreamCDC::with_level_and_seed(
        source,
        params.min_size as usize,
        params.avg_size as usize,
        max,
        Normalization::Level1,
        params.seed,
    ) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => std::io::Error::other(format!("chunker: {other:?}")),
        })?;
        total += chunk.length as u64;
        f(&chunk.data)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            seed: 7,
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        }
    }

    fn cut(p: &ChunkerParams, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunk_stream::<_, std::io::Error>(p, data, |c| {
            out.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input_within_bounds(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let p = small();
            let chunks = cut(&p, &data);
            prop_assert_eq!(chunks.concat(), data.clone());
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(c.len() <= p.max_size as usize);
                if i + 1 < chunks.len() { prop_assert!(c.len() >= p.min_size as usize); }
            }
        }
    }

    #[test]
    fn boundaries_follow_content_and_seed() {
        let mut data = vec![0u8; 50_000];
        let mut x = 1u32;
        for b in &mut data {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        let p = small();
        let a = cut(&p, &data);
        // Insert a byte near the start: later chunks are the same.
        let mut shifted = data.clone();
        shifted.insert(100, 42);
        let b = cut(&p, &shifted);
        let common = a.iter().filter(|c| b.contains(c)).count();
        assert!(common * 10 >= a.len() * 8, "{common} of {}", a.len());
        // Another seed cuts elsewhere.
        let c = cut(&ChunkerParams { seed: 8, ..p }, &data);
        assert_ne!(a, c);
    }
}
