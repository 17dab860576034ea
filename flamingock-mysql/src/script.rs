//! Splitting a MySQL script into statements, the way the `mysql` client
//! does, and telling which statements commit implicitly.

/// Splits `sql` into statements (trimmed, without their delimiter), skipping
/// empty and comment-only ones, as the `mysql` command-line client does.
///
/// * `DELIMITER <token>` on a line of its own changes the delimiter (for
///   `CREATE PROCEDURE`, `CREATE TRIGGER`... whose bodies hold `;`); the line
///   itself is not a statement.
/// * The delimiter does not split inside a `'...'` or `"..."` string
///   (backslash escapes and doubled quotes), a `` `...` `` identifier, a
///   `#` or `-- ` comment, or a `/* */` comment. Conditional comments
///   (`/*! ... */`, `/*!50003 ... */`, optimizer hints `/*+ ... */`) are
///   code the server runs: they stay in their statement.
///
/// ```
/// use flamingock_mysql::split_statements;
/// let script = "CREATE TABLE t (s TEXT DEFAULT ';'); # a comment; with a semicolon
/// DELIMITER $$
/// CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END$$
/// DELIMITER ;
/// /*!40101 SET NAMES utf8mb4 */;";
/// let stmts = split_statements(script);
/// assert_eq!(stmts.len(), 3);
/// assert!(stmts[1].ends_with("SELECT 2; END"));
/// assert_eq!(stmts[2], "/*!40101 SET NAMES utf8mb4 */");
/// ```
pub fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut delimiter: &str = ";";
    let mut start = 0;
    let mut i = 0;
    // Whether the current statement has anything besides blanks and comments.
    let mut has_code = false;
    while i < b.len() {
        // A DELIMITER command: only where a statement starts, on its own line.
        if !has_code && at_line_start(b, i) && starts_with_word(&b[i..], b"delimiter") {
            let line_end = b[i..]
                .iter()
                .position(|c| *c == b'\n')
                .map_or(b.len(), |p| i + p);
            let arg = sql[i + "delimiter".len()..line_end].trim();
            if !arg.is_empty() {
                delimiter = arg.split_whitespace().next().unwrap_or(";");
                i = line_end;
                start = i;
                continue;
            }
        }
        let c = b[i];
        match c {
            b'#' => {
                skip_line(b, &mut i);
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2)
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                skip_line(b, &mut i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let code = matches!(b.get(i + 2), Some(b'!') | Some(b'+'));
                let end = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2);
                if code {
                    has_code = true;
                }
                i = end;
                continue;
            }
            b'\'' | b'"' | b'`' => {
                has_code = true;
                i = skip_quoted(b, i);
                continue;
            }
            _ => {}
        }
        if b[i..].starts_with(delimiter.as_bytes()) {
            if has_code {
                out.push(sql[start..i].trim());
            }
            i += delimiter.len();
            start = i;
            has_code = false;
            continue;
        }
        if !c.is_ascii_whitespace() {
            has_code = true;
        }
        i += 1;
    }
    if has_code {
        let last = sql[start..].trim();
        if !last.is_empty() {
            out.push(last);
        }
    }
    out
}

/// Whether only blanks precede `i` on its line (comments and blank lines
/// before it, since the statement's start, are fine: the caller checks
/// that no code came since).
fn at_line_start(b: &[u8], i: usize) -> bool {
    b[..i]
        .iter()
        .rev()
        .take_while(|c| **c != b'\n')
        .all(|c| c.is_ascii_whitespace())
}

fn starts_with_word(b: &[u8], word: &[u8]) -> bool {
    b.len() > word.len()
        && b[..word.len()].eq_ignore_ascii_case(word)
        && b[word.len()].is_ascii_whitespace()
}

fn skip_line(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i] != b'\n' {
        *i += 1;
    }
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// The index just past the quoted token starting at `i`.
fn skip_quoted(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if q != b'`' => j += 2,
            c if c == q => {
                if b.get(j + 1) == Some(&q) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    b.len()
}

/// The statement's first words, upper-cased, past comments; a conditional
/// comment's content counts as code (`/*!50003 CREATE*/ ...` starts with
/// `CREATE`).
fn first_words(stmt: &str, n: usize) -> Vec<String> {
    let b = stmt.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() && words.len() < n {
        match b[i] {
            b'#' => skip_line(b, &mut i),
            b'-' if b.get(i + 1) == Some(&b'-') => skip_line(b, &mut i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if b.get(i + 2) == Some(&b'!') {
                    // The version number, then the content as code.
                    i += 3;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2);
                }
            }
            b'*' if b.get(i + 1) == Some(&b'/') => i += 2,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                words.push(stmt[s..i].to_ascii_uppercase());
            }
            b'\'' | b'"' | b'`' => i = skip_quoted(b, i),
            _ => i += 1,
        }
    }
    words
}

/// Whether MySQL / MariaDB commit the open transaction implicitly when
/// running `stmt` (DDL, account management, table maintenance, `LOCK
/// TABLES`...), and if so, what kind of statement it is. `CREATE TEMPORARY
/// TABLE` and `DROP TEMPORARY TABLE` do not commit.
///
/// ```
/// use flamingock_mysql::implicit_commit;
/// assert_eq!(implicit_commit("create table t (id int)"), Some("CREATE TABLE"));
/// assert_eq!(implicit_commit("/*!50003 CREATE*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @x = 1 */"), Some("CREATE TRIGGER"));
/// assert_eq!(implicit_commit("CREATE TEMPORARY TABLE t (id int)"), None);
/// assert_eq!(implicit_commit("INSERT INTO t VALUES (1)"), None);
/// ```
pub fn implicit_commit(stmt: &str) -> Option<&'static str> {
    let w = first_words(stmt, 8);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    // The object of CREATE / ALTER / DROP, past modifiers.
    let object = |rest: &[&str]| -> Option<&'static str> {
        const OBJECTS: &[(&str, &str)] = &[
            ("TABLE", "TABLE"),
            ("INDEX", "INDEX"),
            ("VIEW", "VIEW"),
            ("DATABASE", "DATABASE"),
            ("SCHEMA", "SCHEMA"),
            ("PROCEDURE", "PROCEDURE"),
            ("FUNCTION", "FUNCTION"),
            ("TRIGGER", "TRIGGER"),
            ("EVENT", "EVENT"),
            ("USER", "USER"),
            ("ROLE", "ROLE"),
            ("SEQUENCE", "SEQUENCE"),
            ("TABLESPACE", "TABLESPACE"),
            ("SERVER", "SERVER"),
        ];
        rest.iter()
            .find_map(|word| OBJECTS.iter().find(|(k, _)| k == word).map(|(_, v)| *v))
    };
    let kind = match w.as_slice() {
        ["CREATE" | "DROP", "TEMPORARY", ..] => return None,
        ["CREATE", rest @ ..] => ("CREATE", object(rest)),
        ["ALTER", rest @ ..] => ("ALTER", object(rest)),
        ["DROP", rest @ ..] => ("DROP", object(rest)),
        ["RENAME", ..] => ("RENAME", None),
        ["TRUNCATE", ..] => ("TRUNCATE", None),
        ["LOCK", "TABLES" | "TABLE", ..] => ("LOCK TABLES", None),
        ["UNLOCK", ..] => ("UNLOCK TABLES", None),
        ["GRANT", ..] => ("GRANT", None),
        ["REVOKE", ..] => ("REVOKE", None),
        ["ANALYZE" | "OPTIMIZE" | "REPAIR" | "CHECK", "TABLE" | "NO_WRITE_TO_BINLOG" | "LOCAL", ..] => {
            ("table maintenance", None)
        }
        ["FLUSH", ..] => ("FLUSH", None),
        ["INSTALL" | "UNINSTALL", ..] => ("INSTALL/UNINSTALL", None),
        ["SET", "PASSWORD", ..] => ("SET PASSWORD", None),
        _ => return None,
    };
    Some(match kind {
        ("CREATE", Some(o)) => leak_static("CREATE", o),
        ("ALTER", Some(o)) => leak_static("ALTER", o),
        ("DROP", Some(o)) => leak_static("DROP", o),
        (verb, _) => verb,
    })
}

/// `"CREATE"` + `"TABLE"` → `"CREATE TABLE"`, from a fixed table (no allocation).
fn leak_static(verb: &str, object: &str) -> &'static str {
    const ALL: &[&str] = &[
        "CREATE TABLE",
        "CREATE INDEX",
        "CREATE VIEW",
        "CREATE DATABASE",
        "CREATE SCHEMA",
        "CREATE PROCEDURE",
        "CREATE FUNCTION",
        "CREATE TRIGGER",
        "CREATE EVENT",
        "CREATE USER",
        "CREATE ROLE",
        "CREATE SEQUENCE",
        "CREATE TABLESPACE",
        "CREATE SERVER",
        "ALTER TABLE",
        "ALTER INDEX",
        "ALTER VIEW",
        "ALTER DATABASE",
        "ALTER SCHEMA",
        "ALTER PROCEDURE",
        "ALTER FUNCTION",
        "ALTER TRIGGER",
        "ALTER EVENT",
        "ALTER USER",
        "ALTER ROLE",
        "ALTER SEQUENCE",
        "ALTER TABLESPACE",
        "ALTER SERVER",
        "DROP TABLE",
        "DROP INDEX",
        "DROP VIEW",
        "DROP DATABASE",
        "DROP SCHEMA",
        "DROP PROCEDURE",
        "DROP FUNCTION",
        "DROP TRIGGER",
        "DROP EVENT",
        "DROP USER",
        "DROP ROLE",
        "DROP SEQUENCE",
        "DROP TABLESPACE",
        "DROP SERVER",
    ];
    ALL.iter()
        .find(|s| {
            s.len() == verb.len() + 1 + object.len() && s.starts_with(verb) && s.ends_with(object)
        })
        .copied()
        .unwrap_or("DDL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_comments_and_identifiers_hide_semicolons() {
        let s = split_statements(
            "INSERT INTO t VALUES ('a;b', \"c;d\", 'it''s;', 'x\\';y');\n\
             SELECT `odd;name` FROM t; -- trailing; comment\n\
             /* block; comment */ SELECT 2;\n# hash; comment\nSELECT 3",
        );
        assert_eq!(s.len(), 4, "{s:?}");
        assert!(s[0].ends_with("'x\\';y')"));
        assert_eq!(s[1], "SELECT `odd;name` FROM t");
        assert!(s[3].ends_with("SELECT 3"), "{s:?}");
    }

    #[test]
    fn double_dash_needs_a_space() {
        // `--1` is minus minus one, not a comment.
        let s = split_statements("SELECT 1--1; SELECT 2");
        assert_eq!(s, vec!["SELECT 1--1", "SELECT 2"]);
    }

    #[test]
    fn delimiter_blocks() {
        let s = split_statements(
            "CREATE TABLE t (id INT);\n\
             DELIMITER //\n\
             CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN\n  SET NEW.id = NEW.id + 1;\nEND //\n\
             delimiter ;\n\
             INSERT INTO t VALUES (1);",
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[1].starts_with("CREATE TRIGGER") && s[1].ends_with("END"));
        assert_eq!(s[2], "INSERT INTO t VALUES (1)");
    }

    #[test]
    fn delimiter_after_a_comment() {
        let s = split_statements(
            "SELECT 1; # a comment; with a semicolon\n-- another\nDELIMITER $$\nCREATE PROCEDURE p() BEGIN SELECT 1; END$$\nDELIMITER ;\nSELECT 2;",
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[1].ends_with("SELECT 1; END"), "{s:?}");
        assert_eq!(s[2], "SELECT 2");
    }

    #[test]
    fn comment_only_and_empty_statements_are_dropped() {
        assert!(split_statements(" ; -- nothing\n ; /* x */ ;").is_empty());
    }

    #[test]
    fn mysqldump_conditional_comments() {
        let dump = "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
                    /*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @x = 1 */;";
        let s = split_statements(dump);
        assert_eq!(s.len(), 2);
        assert_eq!(implicit_commit(s[0]), None);
        assert_eq!(implicit_commit(s[1]), Some("CREATE TRIGGER"));
    }

    #[test]
    fn classifies_implicit_commits() {
        for (sql, kind) in [
            ("alter table t add column c int", Some("ALTER TABLE")),
            ("CREATE UNIQUE INDEX i ON t (c)", Some("CREATE INDEX")),
            ("create or replace view v as select 1", Some("CREATE VIEW")),
            (
                "CREATE DEFINER=root PROCEDURE p() SELECT 1",
                Some("CREATE PROCEDURE"),
            ),
            ("DROP TABLE IF EXISTS t", Some("DROP TABLE")),
            ("RENAME TABLE a TO b", Some("RENAME")),
            ("TRUNCATE t", Some("TRUNCATE")),
            ("LOCK TABLES t WRITE", Some("LOCK TABLES")),
            ("-- c\nCREATE TABLE t (id int)", Some("CREATE TABLE")),
            ("DROP TEMPORARY TABLE t", None),
            ("UPDATE t SET c = 1", None),
            ("SET @x = 1", None),
            ("SELECT 'CREATE TABLE'", None),
        ] {
            assert_eq!(implicit_commit(sql), kind, "{sql}");
        }
    }
}
