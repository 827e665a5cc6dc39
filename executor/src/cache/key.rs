//! Step keys: a chain of blake3 hashes, each step's over its parent's key and what the
//! step itself reads. Fields are length-prefixed, so no two field lists hash alike.

/// A step's (or a stage start's) cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKey(pub [u8; 32]);

impl StepKey {
    /// The key as lower-case hex (file names of cache entries).
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// A key from its hex form (`None` unless 64 hex digits).
    pub fn parse(hex: &str) -> Option<StepKey> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| StepKey(*h.as_bytes()))
    }
}

impl std::fmt::Display for StepKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Builds a key from named fields.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    /// A hasher for keys of `kind` (`"step"`, `"stage"`, …), versioned.
    pub fn new(kind: &str) -> KeyHasher {
        let mut h = KeyHasher(blake3::Hasher::new());
        h.field("kiln-cache-v1", kind.as_bytes());
        h
    }

    /// Adds one named field.
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// Adds a parent or input key.
    pub fn key(&mut self, name: &str, key: &StepKey) -> &mut Self {
        self.field(name, &key.0)
    }

    pub fn finish(&self) -> StepKey {
        StepKey(*self.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_delimited() {
        let a = KeyHasher::new("step").field("a", b"bc").finish();
        let b = KeyHasher::new("step").field("ab", b"c").finish();
        assert_ne!(a, b);
        let c = KeyHasher::new("step").field("a", b"bc").finish();
        assert_eq!(a, c);
        assert_eq!(a.hex().len(), 64);
    }
}
