//! A compact, exact set of user IDs with a few flags each, for de-duplicating a
//! large input and remembering which users an earlier run already finished.
//!
//! IDs are stored back to back in an arena of fixed-size chunks (never copied
//! when it grows), as `[length][flags][bytes]`; a user of the local server is
//! stored as its localpart alone. The hash table holds only 4-byte offsets. A
//! million `@user0000000:example.org` IDs take about 13 MB of arena and 10 MB of
//! table, where a `HashSet<String>` takes several times that. Membership is
//! exact: the bytes are compared, never only a hash.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// Set on an ID stored in full (not of the local server).
const FULL_ID: u8 = 1;
/// The user has a row from an earlier run.
pub const DONE: u8 = 2;
/// The user was seen in this run's input.
pub const SEEN: u8 = 4;

const CHUNK_BITS: u32 = 20;
const CHUNK: usize = 1 << CHUNK_BITS; // 1 MiB

pub struct UserSet {
    chunks: Vec<Vec<u8>>,
    table: HashTable<u32>,
    hasher: RandomState,
    /// `:server_name` of local users, whose IDs are stored as localparts.
    local_suffix: String,
}

impl UserSet {
    /// A set that stores users of `server_name` compactly.
    pub fn new(server_name: &str) -> Self {
        UserSet {
            chunks: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
            local_suffix: format!(":{server_name}"),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The stored key of an ID: its localpart for a local user, else the whole ID.
    fn key<'a>(&self, id: &'a str) -> (u8, &'a [u8]) {
        match id
            .strip_prefix('@')
            .and_then(|rest| rest.strip_suffix(self.local_suffix.as_str()))
        {
            Some(localpart) if !localpart.contains(':') => (0, localpart.as_bytes()),
            _ => (FULL_ID, id.as_bytes()),
        }
    }

    fn entry(chunks: &[Vec<u8>], offset: u32) -> (u8, &[u8]) {
        let chunk = &chunks[(offset >> CHUNK_BITS) as usize];
        let at = (offset as usize) & (CHUNK - 1);
        let len = usize::from(chunk[at]);
        (chunk[at + 1], &chunk[at + 2..at + 2 + len])
    }

    fn hash(hasher: &RandomState, kind: u8, key: &[u8]) -> u64 {
        hasher.hash_one((kind, key))
    }

    /// The flags of `id`, if it is in the set.
    pub fn flags(&self, id: &str) -> Option<u8> {
        let (kind, key) = self.key(id);
        let hash = Self::hash(&self.hasher, kind, key);
        let chunks = &self.chunks;
        self.table
            .find(hash, |&off| {
                let (flags, k) = Self::entry(chunks, off);
                flags & FULL_ID == kind && k == key
            })
            .map(|&off| Self::entry(chunks, off).0 & !FULL_ID)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.flags(id).is_some()
    }

    /// Adds `flag` to `id`, inserting it if needed. Returns the flags it had
    /// before, or `None` if it was not in the set. IDs are at most 255 bytes
    /// (the caller has validated them).
    pub fn visit(&mut self, id: &str, flag: u8) -> Option<u8> {
        let (kind, key) = self.key(id);
        assert!(key.len() <= 255, "user IDs are at most 255 bytes");
        let hash = Self::hash(&self.hasher, kind, key);
        let chunks = &self.chunks;
        let found = self
            .table
            .find(hash, |&off| {
                let (flags, k) = Self::entry(chunks, off);
                flags & FULL_ID == kind && k == key
            })
            .copied();
        if let Some(off) = found {
            let chunk = &mut self.chunks[(off >> CHUNK_BITS) as usize];
            let at = ((off as usize) & (CHUNK - 1)) + 1;
            let before = chunk[at];
            chunk[at] |= flag;
            return Some(before & !FULL_ID);
        }
        let need = key.len() + 2;
        if self.chunks.last().is_none_or(|c| c.len() + need > CHUNK) {
            assert!(
                self.chunks.len() < (1 << (32 - CHUNK_BITS)),
                "more than 4 GiB of distinct user IDs"
            );
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let offset = ((index as u32) << CHUNK_BITS) | chunk.len() as u32;
        chunk.push(key.len() as u8);
        chunk.push(kind | flag);
        chunk.extend_from_slice(key);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.table.insert_unique(hash, offset, |&off| {
            let (flags, k) = Self::entry(chunks, off);
            Self::hash(hasher, flags & FULL_ID, k)
        });
        None
    }

    /// Adds `id`; returns false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        self.visit(id, 0).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_membership() {
        let mut s = UserSet::new("example.org");
        assert!(s.insert("@alice:example.org"));
        assert!(!s.insert("@alice:example.org"));
        // Case matters: IDs are looked up exactly.
        assert!(s.insert("@Alice:example.org"));
        assert!(s.contains("@alice:example.org"));
        assert!(!s.contains("@bob:example.org"));
        // A remote user with the same localpart is another user.
        assert!(!s.contains("@alice:example.org.evil"));
        assert!(s.insert("@alice:example.org.evil"));
        assert!(s.insert("@alice:other.org"));
        assert!(!s.insert("@alice:other.org"));
        // Keys of local users are localparts: a full ID that equals one is distinct.
        assert!(s.insert("alice"));
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn flags_accumulate() {
        let mut s = UserSet::new("example.org");
        assert_eq!(s.visit("@a:example.org", DONE), None);
        assert_eq!(s.visit("@a:example.org", SEEN), Some(DONE));
        assert_eq!(s.visit("@a:example.org", SEEN), Some(DONE | SEEN));
        assert_eq!(s.visit("@b:other.org", SEEN), None);
        assert_eq!(s.flags("@b:other.org"), Some(SEEN));
        assert_eq!(s.flags("@c:example.org"), None);
    }

    #[test]
    fn many_ids_survive_growth_across_chunks() {
        let mut s = UserSet::new("example.org");
        let n = 120_000; // more than one 1 MiB chunk of keys
        for i in 0..n {
            assert!(s.insert(&format!("@user{i:07}:example.org")));
            assert!(s.insert(&format!("@user{i:07}:remote.example")));
        }
        assert!(s.chunks.len() > 1);
        for i in 0..n {
            assert!(s.contains(&format!("@user{i:07}:example.org")));
            assert!(!s.insert(&format!("@user{i:07}:remote.example")));
        }
        assert!(!s.contains(&format!("@user{n:07}:example.org")));
        assert_eq!(s.len(), 2 * n);
        // 255-byte IDs fit.
        let long = format!("@{}:example.org", "x".repeat(255 - 13));
        assert_eq!(long.len(), 255);
        assert!(s.insert(&long));
        let long_remote = format!("@{}:remote.org", "x".repeat(255 - 12));
        assert!(s.insert(&long_remote));
        assert!(s.contains(&long_remote));
    }
}
