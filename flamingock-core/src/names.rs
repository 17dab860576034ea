//! Names a backend interpolates into what it sends (schemas, table prefixes,
//! databases, collections, tables): checked before anything is sent.
//!
//! A backend quotes every name it uses, so an odd name could not inject
//! anything; it is refused all the same, because a name such as
//! `bad"name` or `app schema` is nearly always a typo in a URL or a setting,
//! and acting on it would create a schema or table nobody meant to have.

/// A name that is not a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{name}' is not a plain identifier: {reason}")]
pub struct InvalidName {
    /// What the name is for, e.g. `schema` or `table prefix`.
    pub kind: &'static str,
    /// The name as given (control characters escaped).
    pub name: String,
    /// What is wrong with it and what is allowed.
    pub reason: String,
}

/// Checks that `name` is a plain identifier: ASCII letters, digits and `_`
/// (plus the characters in `also`, for stores whose own rules allow more,
/// such as `-` in DynamoDB table names), starting with a letter or `_`, at
/// most `max_len` bytes.
///
/// ```
/// use flamingock_core::names::plain_identifier;
/// assert!(plain_identifier("schema", "app_v2", &[], 63).is_ok());
/// let err = plain_identifier("schema", "bad\"name", &[], 63).unwrap_err();
/// assert!(err.to_string().contains("schema 'bad\"name' is not a plain identifier"));
/// assert!(plain_identifier("table prefix", "my-app", &['-'], 200).is_ok());
/// ```
pub fn plain_identifier(
    kind: &'static str,
    name: &str,
    also: &[char],
    max_len: usize,
) -> Result<(), InvalidName> {
    let allowed = || {
        let mut s = String::from("letters a-z and A-Z, digits and '_'");
        for c in also {
            s.push_str(&format!(", '{c}'"));
        }
        s
    };
    let fail = |reason: String| InvalidName {
        kind,
        name: name
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
        reason,
    };
    let Some(first) = name.chars().next() else {
        return Err(fail("it is empty".into()));
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(fail(format!(
            "it must start with a letter or '_' (then {})",
            allowed()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || also.contains(c)))
    {
        return Err(fail(format!(
            "'{}' is not allowed (use {})",
            bad.escape_debug(),
            allowed()
        )));
    }
    if name.len() > max_len {
        return Err(fail(format!("it is too long: at most {max_len} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::plain_identifier;

    #[test]
    fn plain_names_pass_and_others_say_why() {
        for ok in ["a", "_x", "App_2", "flamingock"] {
            assert!(plain_identifier("schema", ok, &[], 63).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("1abc", "start with a letter"),
            ("bad\"name", "'\\\"' is not allowed"),
            ("my schema", "' ' is not allowed"),
            ("a;drop", "';' is not allowed"),
            ("tab\tx", "'\\t' is not allowed"),
            ("ä", "start with a letter"),
        ] {
            let e = plain_identifier("schema", bad, &[], 63).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(plain_identifier("schema", &"a".repeat(64), &[], 63).is_err());
        assert!(plain_identifier("table", "a-b.c", &['-', '.'], 255).is_ok());
    }
}
