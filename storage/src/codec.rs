//! The one codec for values stored through the KV API.
//!
//! Every value is one format-version byte followed by its bincode 2 (serde mode, standard
//! config) encoding. Replacing bincode means adding a new version byte here and nowhere else.

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// Format version of values written by this build: bincode 2, serde mode, standard config.
pub const FORMAT_BINCODE2: u8 = 1;

/// Encode `value` with a leading format-version byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![FORMAT_BINCODE2];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(Error::Encode)?;
    Ok(out)
}

/// Decode a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::EmptyValue)?;
    match version {
        FORMAT_BINCODE2 => {
            let (value, _read) =
                bincode::serde::decode_from_slice(body, bincode::config::standard())
                    .map_err(Error::Decode)?;
            Ok(value)
        }
        other => Err(Error::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: u64,
        tags: Vec<String>,
    }

    #[test]
    fn round_trips_with_a_leading_version_byte() -> Result<(), Error> {
        let value = Sample {
            name: "claw".into(),
            count: 7,
            tags: vec!["a".into(), "b".into()],
        };
        let bytes = encode(&value)?;
        assert_eq!(bytes[0], FORMAT_BINCODE2);
        assert_eq!(decode::<Sample>(&bytes)?, value);
        Ok(())
    }

    #[test]
    fn rejects_unknown_versions_and_empty_values() {
        assert!(matches!(decode::<u32>(&[]), Err(Error::EmptyValue)));
        assert!(matches!(
            decode::<u32>(&[9, 1]),
            Err(Error::UnknownFormat(9))
        ));
    }

    #[test]
    fn rejects_truncated_bodies() -> Result<(), Error> {
        let bytes = encode(&"a longer string value")?;
        assert!(matches!(
            decode::<String>(&bytes[..4]),
            Err(Error::Decode(_))
        ));
        Ok(())
    }
}
