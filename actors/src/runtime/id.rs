//! Object ids: 1–128 characters of `[A-Za-z0-9._:-]` (SPEC §3).

use std::fmt;

/// A validated object id. Constructing one is the only way to address an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(String);

/// Longest allowed id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// The id is empty.
    #[error("object id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("object id is {0} bytes long; at most 128 are allowed")]
    TooLong(usize),
    /// The id contains a character outside `[A-Za-z0-9._:-]`.
    #[error("object id contains {0:?}; only A-Z a-z 0-9 . _ : - are allowed")]
    BadChar(char),
}

impl ObjectId {
    /// Validate `id`.
    pub fn parse(id: &str) -> Result<ObjectId, InvalidId> {
        if id.is_empty() {
            return Err(InvalidId::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong(id.len()));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(InvalidId::BadChar(bad));
        }
        Ok(ObjectId(id.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for ObjectId {
    type Error = InvalidId;
    fn try_from(id: &str) -> Result<Self, Self::Error> {
        ObjectId::parse(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for id in ["a", "user:42", "org:acme.prod_1-x", &"z".repeat(128)] {
            assert_eq!(
                ObjectId::parse(id).map(|i| i.to_string()),
                Ok(id.to_string())
            );
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(ObjectId::parse(""), Err(InvalidId::Empty));
        assert_eq!(
            ObjectId::parse(&"z".repeat(129)),
            Err(InvalidId::TooLong(129))
        );
        for (id, bad) in [
            ("../etc", '/'),
            ("a b", ' '),
            ("é", 'é'),
            ("a\0", '\0'),
            ("x/y", '/'),
            ("x\\y", '\\'),
        ] {
            assert_eq!(ObjectId::parse(id), Err(InvalidId::BadChar(bad)), "{id:?}");
        }
    }
}
