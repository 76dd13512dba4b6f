//! Content-defined chunking with FastCDC (2020), seeded per repository.
//!
//! Data is read into one buffer per thread (twice the maximum chunk size,
//! reused for every file) and cut in place with FastCDC's gear hash, so
//! memory stays bounded whatever the file size and no allocation happens per
//! file or per chunk. A cut only looks at the next `max_size` bytes, so the
//! buffer always holds at least that much (or the rest of the stream) before
//! cutting: boundaries are the same as when cutting the whole stream at once.

use std::cell::RefCell;
use std::io::Read;

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};

use crate::crypto::ChunkerParams;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Cuts everything `reader` yields into chunks and calls `f` on each, in
/// order. Returns the number of bytes read.
///
/// # Errors
/// An I/O error of the reader, or the first error of `f`.
pub fn chunk_stream<R: Read, E: From<std::io::Error>>(
    params: &ChunkerParams,
    reader: R,
    f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    // Take the thread's buffer (a nested call gets a fresh one) and put it back after.
    let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let result = cut_all(params, reader, f, &mut buf);
    BUF.with(|b| *b.borrow_mut() = buf);
    result
}

fn cut_all<R: Read, E: From<std::io::Error>>(
    params: &ChunkerParams,
    mut reader: R,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
    buf: &mut Vec<u8>,
) -> Result<u64, E> {
    let (min, avg, max) = (
        params.min_size as usize,
        params.avg_size as usize,
        params.max_size as usize,
    );
    let (gear, gear_ls) = get_gear_with_seed(params.seed);
    let (mask_s, mask_l) = select_masks(avg, Normalization::Level1);
    let capacity = 2 * max;
    buf.clear();
    let mut start = 0;
    let mut eof = false;
    let mut total = 0u64;
    loop {
        if !eof && buf.len() - start < max {
            // Move the unread tail to the front and fill up.
            buf.drain(..start);
            start = 0;
            // read_to_end fills spare capacity without zeroing it first and
            // stops at the limit or at the end of the stream.
            let want = (capacity - buf.len()) as u64;
            buf.reserve_exact(capacity - buf.len());
            let n = (&mut reader).take(want).read_to_end(buf)?;
            if (n as u64) < want {
                eof = true;
            }
        }
        let remaining = buf.len() - start;
        if remaining == 0 {
            return Ok(total);
        }
        let (_, count) = cut_gear(
            &buf[start..],
            min,
            avg,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &gear,
            &gear_ls,
        );
        let count = count.clamp(1, remaining);
        f(&buf[start..start + count])?;
        start += count;
        total += count as u64;
    }
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

    proptest! {
        #[test]
        fn same_cuts_as_fastcdc_on_the_whole_input(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let p = small();
            let ours: Vec<usize> = cut(&p, &data).iter().map(Vec::len).collect();
            let reference: Vec<usize> = fastcdc::v2020::FastCDC::with_level_and_seed(&data, 64, 256, 1024, Normalization::Level1, 7).map(|c| c.length).collect();
            prop_assert_eq!(ours, reference);
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
