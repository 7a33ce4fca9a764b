//! A compact, exact set of user IDs, for de-duplicating a large input.
//!
//! The IDs are stored back to back in one byte arena (length byte + bytes: an ID
//! is at most 255 bytes), and the hash table holds only 4-byte offsets into it.
//! A million 25-byte IDs take about 26 MB in the arena plus 8 MB of table, where
//! a `HashSet<String>` would take several times that. Membership is exact: the
//! bytes are compared, never only a hash.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

pub struct UserSet {
    arena: Vec<u8>,
    table: HashTable<u32>,
    hasher: RandomState,
}

impl Default for UserSet {
    fn default() -> Self {
        Self::new()
    }
}

impl UserSet {
    pub fn new() -> Self {
        UserSet {
            arena: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn entry_at(arena: &[u8], offset: u32) -> &[u8] {
        let start = offset as usize;
        let len = usize::from(arena[start]);
        &arena[start + 1..start + 1 + len]
    }

    pub fn contains(&self, id: &str) -> bool {
        let hash = self.hasher.hash_one(id.as_bytes());
        self.table
            .find(hash, |&off| {
                Self::entry_at(&self.arena, off) == id.as_bytes()
            })
            .is_some()
    }

    /// Adds `id`; returns false if it was already there. IDs longer than 255
    /// bytes are not valid user IDs and are refused by the caller.
    pub fn insert(&mut self, id: &str) -> bool {
        let bytes = id.as_bytes();
        assert!(bytes.len() <= 255, "user IDs are at most 255 bytes");
        let hash = self.hasher.hash_one(bytes);
        let arena = &self.arena;
        if self
            .table
            .find(hash, |&off| Self::entry_at(arena, off) == bytes)
            .is_some()
        {
            return false;
        }
        let offset = u32::try_from(self.arena.len())
            .expect("an input of more than 4 GiB of distinct user IDs");
        self.arena.push(bytes.len() as u8);
        self.arena.extend_from_slice(bytes);
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.table.insert_unique(hash, offset, |&off| {
            hasher.hash_one(Self::entry_at(arena, off))
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_membership() {
        let mut s = UserSet::new();
        assert!(s.insert("@alice:example.org"));
        assert!(!s.insert("@alice:example.org"));
        // Case matters: IDs are looked up exactly.
        assert!(s.insert("@Alice:example.org"));
        assert!(s.contains("@alice:example.org"));
        assert!(!s.contains("@bob:example.org"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn many_ids_survive_growth() {
        let mut s = UserSet::new();
        for i in 0..50_000 {
            assert!(s.insert(&format!("@user{i}:example.org")));
        }
        for i in 0..50_000 {
            assert!(s.contains(&format!("@user{i}:example.org")));
            assert!(!s.insert(&format!("@user{i}:example.org")));
        }
        assert!(!s.contains("@user50000:example.org"));
        assert_eq!(s.len(), 50_000);
    }
}
