//! Trees: directory listings stored as blobs (a Merkle tree: a directory's
//! id covers everything below it, so unchanged subtrees are shared).
//!
//! Encoding: postcard of [`Tree`], whose first field is the tree version.
//! Names are bytes (any Unix file name round-trips); a valid tree has names
//! that are non-empty, not `.` or `..`, free of `/` and NUL, unique and
//! sorted. Restore refuses trees that break these rules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

/// Tree format version.
pub const VERSION: u32 = 1;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time {
    /// Seconds (may be negative).
    pub secs: i64,
    /// Nanoseconds, 0..1e9.
    pub nanos: u32,
}

/// An extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Name bytes.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Value bytes.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A region of a sparse file that holds no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hole {
    /// Start offset.
    pub offset: u64,
    /// Length.
    pub length: u64,
}

/// Holes must be sorted, disjoint and end within the file's size.
fn check_holes(holes: &[Hole], size: u64) -> std::result::Result<(), &'static str> {
    let mut end = 0u64;
    for h in holes {
        let Some(h_end) = h.offset.checked_add(h.length) else {
            return Err("a hole ends past the largest file size");
        };
        if h.offset < end {
            return Err("holes overlap or are out of order");
        }
        if h_end > size {
            return Err("a hole ends past the end of the file");
        }
        end = h_end;
    }
    Ok(())
}

/// Moves `pos` past the holes that start there. The chunks of a file fill
/// it outside its holes, in order: call this before placing each chunk.
pub fn skip_holes(pos: &mut u64, holes: &mut std::iter::Peekable<std::slice::Iter<'_, Hole>>) {
    while let Some(h) = holes.next_if(|h| h.offset == *pos) {
        *pos = pos.saturating_add(h.length);
    }
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file: its data chunks in order; the chunks fill the file
    /// outside its holes (sorted, disjoint); the file is `size` bytes long.
    File {
        /// Data blobs, in order.
        content: Vec<BlobId>,
        /// Holes of a sparse file.
        holes: Vec<Hole>,
    },
    /// A directory and its listing.
    Dir {
        /// The tree blob of its entries.
        subtree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// Target bytes, as stored by the OS.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket (restored as nothing; kept for completeness).
    Socket,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
}

/// One directory entry and its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name bytes (one path component).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Kind and content.
    pub kind: NodeKind,
    /// Permission bits and file type bits (st_mode).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, if known.
    pub user: Option<String>,
    /// Group name, if known.
    pub group: Option<String>,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time.
    pub mtime: Time,
    /// Status change time (used to detect changes, not restored).
    pub ctime: Time,
    /// Inode number (change detection and hard links).
    pub inode: u64,
    /// Device of the file system (hard links).
    pub device: u64,
    /// Number of hard links.
    pub links: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// The name as text, for messages.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    /// True for regular files.
    pub fn is_file(&self) -> bool {
        matches!(self.kind, NodeKind::File { .. })
    }

    /// One letter for listings: `d`, `-`, `l`, `p`, `s`, `c`, `b`.
    pub fn type_char(&self) -> char {
        match self.kind {
            NodeKind::Dir { .. } => 'd',
            NodeKind::File { .. } => '-',
            NodeKind::Symlink { .. } => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::Socket => 's',
            NodeKind::CharDevice { .. } => 'c',
            NodeKind::BlockDevice { .. } => 'b',
        }
    }
}

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Format version (1).
    pub version: u32,
    /// Entries sorted by name.
    pub nodes: Vec<Node>,
}

/// Checks that a name is a single, harmless path component.
pub fn validate_name(name: &[u8]) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name == b"." || name == b".." {
        Err("name is . or ..")
    } else if name.contains(&b'/') {
        Err("name contains /")
    } else if name.contains(&0) {
        Err("name contains NUL")
    } else {
        Ok(())
    }
}

impl Tree {
    /// A tree of `nodes`, sorted by name.
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Tree {
            version: VERSION,
            nodes,
        }
    }

    /// Serialized bytes (the blob plaintext).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("trees serialize")
    }

    /// Decodes and validates a tree blob.
    pub fn decode(id: &BlobId, bytes: &[u8]) -> Result<Self> {
        let t: Tree = postcard::from_bytes(bytes).map_err(|e| Error::corrupt("tree", id, e))?;
        if t.version != VERSION {
            return Err(Error::corrupt(
                "tree",
                id,
                format!("unknown tree version {}", t.version),
            ));
        }
        for w in t.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err(Error::corrupt(
                    "tree",
                    id,
                    format!("names not sorted or duplicated at {:?}", w[1].name_lossy()),
                ));
            }
        }
        for n in &t.nodes {
            if let Err(why) = validate_name(&n.name) {
                return Err(Error::corrupt(
                    "tree",
                    id,
                    format!("unsafe entry name {:?}: {why}", n.name_lossy()),
                ));
            }
            // Holes are sorted, disjoint and inside the file (§3.7): laying
            // out anything else would overlap or overflow.
            if let NodeKind::File { holes, .. } = &n.kind {
                if let Err(why) = check_holes(holes, n.size) {
                    return Err(Error::corrupt(
                        "tree",
                        id,
                        format!("{:?}: {why}", n.name_lossy()),
                    ));
                }
            }
        }
        Ok(t)
    }

    /// Finds an entry by name.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            user: Some("u".into()),
            group: None,
            size: 3,
            mtime: Time { secs: -5, nanos: 7 },
            ctime: Time::default(),
            inode: 9,
            device: 1,
            links: 1,
            xattrs: vec![Xattr {
                name: b"user.x".to_vec(),
                value: vec![0, 255],
            }],
        }
    }

    proptest! {
        #[test]
        fn tree_round_trip(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..20), 0..10)) {
            let nodes: Vec<Node> = names.iter().filter(|n| validate_name(n).is_ok()).map(|n| node(n, NodeKind::Symlink { target: n.clone() })).collect();
            let t = Tree::new(nodes);
            let id = BlobId::default();
            prop_assert_eq!(Tree::decode(&id, &t.encode()).unwrap(), t);
        }

        #[test]
        fn tree_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&BlobId::default(), &bytes);
        }
    }

    #[test]
    fn malicious_names_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"/etc", b"x\0"] {
            let t = Tree {
                version: VERSION,
                nodes: vec![node(bad, NodeKind::Fifo)],
            };
            assert!(
                Tree::decode(&BlobId::default(), &t.encode()).is_err(),
                "{bad:?}"
            );
        }
        let t = Tree {
            version: VERSION,
            nodes: vec![node(b"b", NodeKind::Fifo), node(b"a", NodeKind::Fifo)],
        };
        assert!(Tree::decode(&BlobId::default(), &t.encode()).is_err());
        let t = Tree {
            version: VERSION,
            nodes: vec![node(b"a", NodeKind::Fifo), node(b"a", NodeKind::Fifo)],
        };
        assert!(Tree::decode(&BlobId::default(), &t.encode()).is_err());
    }
}
