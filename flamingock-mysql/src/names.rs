//! Identifiers: validation, quoting and the qualified names of our tables.

/// MySQL and MariaDB refuse identifiers longer than this many characters.
const MAX_IDENT: usize = 64;
/// Longest suffix we append to the prefix (`_audit_history_change_idx`).
const LONGEST_SUFFIX: usize = "_audit_history_change_idx".len();

/// Quotes `ident` as a MySQL identifier (`` `my``odd` `` for ``my`odd``).
///
/// Every identifier this crate interpolates into SQL goes through here, so a
/// database name or prefix can never inject SQL; use it for your own dynamic
/// names too.
///
/// ```
/// assert_eq!(flamingock_mysql::quote_ident("app"), "`app`");
/// assert_eq!(flamingock_mysql::quote_ident("a`b"), "`a``b`");
/// ```
pub fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Checks a database name or table prefix: a plain identifier (letters,
/// digits, `_`), short enough for MySQL with our suffixes.
pub(crate) fn check(kind: &'static str, ident: &str, reserve: usize) -> Result<(), String> {
    flamingock_core::names::plain_identifier(kind, ident, &[], MAX_IDENT - reserve).map_err(|e| {
        match ident.len() + reserve > MAX_IDENT && !ident.is_empty() {
            true => format!("{e} (MySQL refuses identifiers longer than {MAX_IDENT} characters)"),
            false => e.to_string(),
        }
    })
}

pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    check("table prefix", prefix, LONGEST_SUFFIX)
}

/// Our tables under one prefix.
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

/// Qualified, quoted names of one database + prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) database: String,
    pub(crate) prefix: String,
}

impl Names {
    pub(crate) fn new(database: &str, prefix: &str) -> Result<Self, String> {
        check("database", database, 0)?;
        check_prefix(prefix)?;
        Ok(Names {
            database: database.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The bare table name, e.g. `flamingock_audit_history`.
    pub(crate) fn bare(&self, t: Table) -> String {
        format!("{}_{}", self.prefix, t.suffix())
    }

    /// `` `database`.`prefix_suffix` ``.
    pub(crate) fn qualified(&self, t: Table) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.database),
            quote_ident(&self.bare(t))
        )
    }

    /// The table as people read it in messages: `database.prefix_suffix`.
    pub(crate) fn display(&self, t: Table) -> String {
        format!("{}.{}", self.database, self.bare(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_backticks() {
        assert_eq!(
            quote_ident("x`; DROP TABLE y; --"),
            "`x``; DROP TABLE y; --`"
        );
    }

    #[test]
    fn rejects_empty_odd_and_too_long() {
        assert!(Names::new("", "p").is_err());
        assert!(Names::new("d", "").is_err());
        assert!(Names::new("d", &"p".repeat(40)).is_err());
        assert!(Names::new(&"d".repeat(65), "p").is_err());
        assert!(Names::new("my db", "fk").is_err());
        assert!(Names::new("bad`name", "fk").is_err());
        let n = Names::new("App_1", "fk").expect("valid");
        assert_eq!(n.qualified(Table::Fence), "`App_1`.`fk_fence`");
        assert_eq!(n.display(Table::Lock), "App_1.fk_lock");
    }
}
