//! Identifiers: validation, quoting and the qualified names of our tables.

/// PostgreSQL truncates identifiers longer than this many bytes.
const MAX_IDENT: usize = 63;
/// Longest suffix we append to the prefix (`_audit_history`).
const LONGEST_SUFFIX: usize = "_audit_history_change_idx".len();

/// Quotes `ident` as a PostgreSQL identifier (`"my ""odd"" name"`).
///
/// Every identifier this crate interpolates into SQL goes through here, so a
/// schema or prefix can never inject SQL; use it for your own dynamic names too.
///
/// ```
/// assert_eq!(flamingock_postgres::quote_ident("app"), "\"app\"");
/// assert_eq!(flamingock_postgres::quote_ident("a\"b"), "\"a\"\"b\"");
/// ```
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Checks a schema name or table prefix: a plain identifier (letters,
/// digits, `_`), short enough that PostgreSQL keeps it whole with our
/// suffixes; `Err` says what is wrong.
pub(crate) fn check(kind: &'static str, ident: &str, reserve: usize) -> Result<(), String> {
    flamingock_core::names::plain_identifier(kind, ident, &[], MAX_IDENT - reserve).map_err(|e| {
        match ident.len() + reserve > MAX_IDENT && !ident.is_empty() {
            true => format!("{e} (PostgreSQL truncates identifiers at {MAX_IDENT} bytes)"),
            false => e.to_string(),
        }
    })
}

pub(crate) fn check_schema(schema: &str) -> Result<(), String> {
    check("schema", schema, 0)
}

pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    check("table prefix", prefix, LONGEST_SUFFIX)
}

/// Our tables in one schema under one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    History,
    Current,
    Fence,
    Lock,
    Marker,
}

impl Table {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Table::History => "audit_history",
            Table::Current => "audit_current",
            Table::Fence => "fence",
            Table::Lock => "lock",
            Table::Marker => "marker",
        }
    }
}

/// Qualified, quoted names of one schema + prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) schema: String,
    pub(crate) prefix: String,
}

impl Names {
    pub(crate) fn new(schema: &str, prefix: &str) -> Result<Self, String> {
        check_schema(schema)?;
        check_prefix(prefix)?;
        Ok(Names {
            schema: schema.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The bare table name, e.g. `flamingock_audit_history`.
    pub(crate) fn bare(&self, t: Table) -> String {
        format!("{}_{}", self.prefix, t.suffix())
    }

    /// `"schema"."prefix_suffix"`.
    pub(crate) fn qualified(&self, t: Table) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.bare(t))
        )
    }

    /// The table as people read it in messages: `schema.prefix_suffix`.
    pub(crate) fn display(&self, t: Table) -> String {
        format!("{}.{}", self.schema, self.bare(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(
            quote_ident("x\"; DROP TABLE y; --"),
            "\"x\"\"; DROP TABLE y; --\""
        );
    }

    #[test]
    fn rejects_empty_and_too_long() {
        assert!(Names::new("", "p").is_err());
        assert!(Names::new("s", "").is_err());
        assert!(Names::new("s", &"p".repeat(40)).is_err());
        assert!(Names::new(&"s".repeat(64), "p").is_err());
        assert!(Names::new("My Schema", "fk").is_err());
        assert!(Names::new("bad\"name", "fk").is_err());
        let n = Names::new("My_Schema", "fk").expect("valid");
        assert_eq!(n.qualified(Table::Fence), "\"My_Schema\".\"fk_fence\"");
    }
}
