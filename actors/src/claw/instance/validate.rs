//! Validation of instance inputs; every public entry point runs these before writing.

use super::api::InstanceError;

/// `Ok` when `ok`, else an invalid-argument error on `field` saying `value` is not `rule`.
fn require(ok: bool, field: &'static str, value: &str, rule: &str) -> Result<(), InstanceError> {
    if ok {
        Ok(())
    } else {
        Err(InstanceError::InvalidArgument {
            field,
            reason: format!("{value:?} is not {rule}"),
        })
    }
}

/// Whether `text` is `len` bytes of ASCII letters, digits and `extra`.
fn made_of(text: &str, len: std::ops::RangeInclusive<usize>, extra: &[u8]) -> bool {
    len.contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// An owner key is `user:<id>` or `org:<id>`, the id 1–64 characters of `[A-Za-z0-9._-]`.
pub fn owner(key: &str) -> Result<(), InstanceError> {
    let id = key
        .strip_prefix("user:")
        .or_else(|| key.strip_prefix("org:"));
    require(
        id.is_some_and(|id| made_of(id, 1..=64, b"._-")),
        "owner",
        key,
        "user:<id> or org:<id> with 1-64 characters of A-Z a-z 0-9 . _ -",
    )
}

/// An image tag is 1–128 printable characters of `[A-Za-z0-9._:/@+-]`.
pub fn image_tag(tag: &str) -> Result<(), InstanceError> {
    require(
        made_of(tag, 1..=128, b"._:/@+-"),
        "image_tag",
        tag,
        "1-128 characters of A-Z a-z 0-9 . _ : / @ + -",
    )
}

/// An instance id follows the object id rules (1–128 of `[A-Za-z0-9._:-]`).
pub fn instance_id(id: &str) -> Result<(), InstanceError> {
    crate::ObjectId::parse(id)
        .map(|_| ())
        .map_err(|e| InstanceError::InvalidArgument {
            field: "instance_id",
            reason: e.to_string(),
        })
}

/// An idempotency key is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn idempotency_key(key: &str) -> Result<(), InstanceError> {
    require(
        made_of(key, 1..=128, b"._:-"),
        "idempotency_key",
        key,
        "1-128 characters of A-Z a-z 0-9 . _ : -",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys() {
        for good in ["k", "retry-1", "2026-11-21T10:00:00.000Z", &"x".repeat(128)] {
            assert_eq!(idempotency_key(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "k/1", "é", &"x".repeat(129)] {
            assert!(
                matches!(
                    idempotency_key(bad),
                    Err(InstanceError::InvalidArgument {
                        field: "idempotency_key",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn owners() {
        for good in [
            "user:42",
            "org:acme",
            "org:a.b_c-d",
            &format!("user:{}", "x".repeat(64)),
        ] {
            assert_eq!(owner(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "user:",
            "42",
            "team:x",
            "user:a b",
            "user:a/b",
            &format!("org:{}", "x".repeat(65)),
        ] {
            assert!(
                matches!(
                    owner(bad),
                    Err(InstanceError::InvalidArgument { field: "owner", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn image_tags() {
        for good in [
            "claw:1.2.3",
            "registry.example/claw@sha256-ab",
            "v2+build.7",
        ] {
            assert_eq!(image_tag(good), Ok(()), "{good}");
        }
        for bad in ["", " ", "a b", "tag\n", &"x".repeat(129)] {
            assert!(image_tag(bad).is_err(), "{bad:?}");
        }
    }
}
