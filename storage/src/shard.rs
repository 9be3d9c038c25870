//! Placement: which of the 256 shards an object belongs to, and the name of its file.
//!
//! Both come from stable hashes (xxh3, fixed seed) so they never change between builds or
//! machines, and no path is ever built from raw id text: a file name is the hex of a 128-bit hash
//! of `class` and `id`, and the file records its own class and id so a collision is detected.

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

/// Number of shards. Fixed: changing it would move every object.
pub const SHARD_COUNT: usize = 256;

/// One of the 256 shards; the unit that would move between nodes (SPEC §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u8);

impl ShardId {
    /// The shard that owns object `id` (of any class).
    pub fn of(id: &str) -> ShardId {
        ShardId((xxh3_64(id.as_bytes()) >> 56) as u8)
    }

    /// Directory name of this shard: two lowercase hex digits.
    pub fn dir_name(self) -> String {
        format!("{:02x}", self.0)
    }

    /// Every shard, in order.
    pub fn all() -> impl Iterator<Item = ShardId> {
        (0..=u8::MAX).map(ShardId)
    }
}

/// File name (without directory) of the database of object `id` of class `class`.
pub fn object_file_name(class: &str, id: &str) -> String {
    let mut key = Vec::with_capacity(class.len() + 1 + id.len());
    key.extend_from_slice(class.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    format!("{:032x}.db", xxh3_128(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_across_builds() {
        // Pinned values: if these change, every existing data directory is misread.
        assert_eq!(ShardId::of("inst-1"), ShardId::of("inst-1"));
        assert_eq!(object_file_name("counter", "a").len(), 35);
        let pinned = (
            ShardId::of("user:42").0,
            object_file_name("registry", "user:42"),
        );
        assert_eq!(pinned, (PINNED_SHARD, PINNED_FILE.to_string()));
    }

    const PINNED_SHARD: u8 = 0x9f;
    const PINNED_FILE: &str = "1993c69264997a01211d7ca2cdc0c8f6.db";

    #[test]
    fn shards_spread_ids() {
        let mut seen = [0u32; SHARD_COUNT];
        for i in 0..25_600 {
            seen[ShardId::of(&format!("inst-{i}")).0 as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40 && n < 180), "{seen:?}");
    }

    #[test]
    fn file_names_are_hex_only() {
        let name = object_file_name("instance", "../../etc/passwd");
        assert!(
            name.strip_suffix(".db")
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }
}
