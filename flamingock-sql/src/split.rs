//! Splitting a SQL file into the statements that are executed one by one.
//!
//! Each dialect has its own rules for where a `;` ends a statement; a
//! splitter that gets them wrong either sends half a statement to the server
//! or glues two together. The PostgreSQL rules live in `flamingock-postgres`
//! (`split_statements`, the splitter of its `execute_script`); the SQLite
//! ones are here.

/// A statement of a script: its text (trimmed, without the final `;`) and
/// the 1-based line it starts on, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement text.
    pub sql: &'a str,
    /// Line of `script` the statement starts on (1-based).
    pub line: usize,
}

/// Attaches line numbers to statements that are slices of `script`.
pub fn with_lines<'a>(script: &'a str, stmts: Vec<&'a str>) -> Vec<Statement<'a>> {
    let base = script.as_ptr() as usize;
    stmts
        .into_iter()
        .map(|sql| {
            let offset = (sql.as_ptr() as usize)
                .checked_sub(base)
                .filter(|o| *o <= script.len())
                .unwrap_or(0);
            let line = script.as_bytes()[..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            Statement { sql, line }
        })
        .collect()
}

/// Splits a SQLite script into statements.
///
/// A `;` does not end a statement inside a string (`'it''s'`), an identifier
/// quoted with `"..."`, `` `...` `` or `[...]`, a `--` or `/* */` comment
/// (SQLite block comments do not nest), or the body of a
/// `CREATE [TEMP] TRIGGER ... BEGIN ...; ...; END` (including `CASE ... END`
/// expressions inside it). Comment-only and empty statements are dropped.
///
/// ```
/// let stmts = flamingock_sql::split::sqlite(
///     "CREATE TABLE t (a TEXT DEFAULT ';');
///      CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN
///        UPDATE t SET a = 'x;' WHERE rowid = new.rowid;
///      END;",
/// );
/// assert_eq!(stmts.len(), 2);
/// ```
pub fn sqlite(script: &str) -> Vec<&str> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut has_code = false;
    // First words of the current statement, to recognise CREATE TRIGGER.
    let mut words: Vec<String> = Vec::new();
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                continue;
            }
            q @ (b'\'' | b'"' | b'`') => {
                has_code = true;
                i = skip_quoted(b, i, q);
                continue;
            }
            b'[' => {
                has_code = true;
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(b.len());
                continue;
            }
            b';' if depth == 0 => {
                if has_code {
                    out.push(script[start..i].trim());
                }
                has_code = false;
                words.clear();
                i += 1;
                start = i;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                has_code = true;
                let s = i;
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
                let word = script[s..i].to_ascii_uppercase();
                if is_trigger(&words) {
                    match word.as_str() {
                        "BEGIN" | "CASE" => depth += 1,
                        "END" => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                if words.len() < 3 {
                    words.push(word);
                }
                continue;
            }
            c if !c.is_ascii_whitespace() => has_code = true,
            _ => {}
        }
        i += 1;
    }
    if has_code {
        out.push(script[start..].trim());
    }
    out
}

/// `CREATE TRIGGER` / `CREATE TEMP[ORARY] TRIGGER`.
fn is_trigger(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["CREATE", "TRIGGER", ..] | ["CREATE", "TEMP" | "TEMPORARY", "TRIGGER"]
    )
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Index just past the quoted run starting at `i` (a doubled quote is an
/// escaped quote); the end of input when it is not closed.
fn skip_quoted(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Whether a statement is transaction control (`BEGIN`, `COMMIT`, `END`,
/// `ROLLBACK` without `TO`, `START TRANSACTION`, `ABORT`): inside a
/// transactional change it would commit or end the runner's own transaction,
/// and with it the guarantee that the change and its audit entry commit
/// together.
pub fn is_transaction_control(statement: &str) -> bool {
    let words: Vec<String> = code_words(statement, 3);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["BEGIN", "ATOMIC", ..] => false,
        ["BEGIN" | "COMMIT" | "END" | "ABORT", ..] => true,
        ["START", "TRANSACTION", ..] => true,
        // `ROLLBACK TO [SAVEPOINT] x` stays inside the transaction.
        ["ROLLBACK", "TO", ..] => false,
        ["ROLLBACK", "TRANSACTION" | "WORK", "TO", ..] => false,
        ["ROLLBACK", ..] => true,
        _ => false,
    }
}

/// The first `n` words of a statement, upper-cased, skipping comments.
fn code_words(statement: &str, n: usize) -> Vec<String> {
    let b = statement.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < n {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
            }
            c if c.is_ascii_alphabetic() => {
                let s = i;
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
                out.push(statement[s..i].to_ascii_uppercase());
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => break,
        }
    }
    out
}

/// Whether a script has anything besides blanks and `--` / `/* */` comments
/// (the same in every dialect this crate splits).
pub fn has_code(script: &str) -> bool {
    let b = script.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
            }
            b';' => i += 1,
            c if c.is_ascii_whitespace() => i += 1,
            _ => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_plain_statements_and_blanks() {
        assert_eq!(
            sqlite("CREATE TABLE a (x INT);\nINSERT INTO a VALUES (1);\n\nSELECT 1"),
            [
                "CREATE TABLE a (x INT)",
                "INSERT INTO a VALUES (1)",
                "SELECT 1"
            ]
        );
        assert!(sqlite("").is_empty());
        assert!(sqlite(" ;;\n ; ").is_empty());
        assert!(sqlite("-- only; a comment\n/* and; this */").is_empty());
    }

    #[test]
    fn sqlite_strings_and_identifiers() {
        assert_eq!(
            sqlite("INSERT INTO t VALUES ('a;b', 'it''s; ok'); SELECT \"we;ird\"\"x\", `b;q`, [c;d] FROM t;"),
            [
                "INSERT INTO t VALUES ('a;b', 'it''s; ok')",
                "SELECT \"we;ird\"\"x\", `b;q`, [c;d] FROM t"
            ]
        );
        // No backslash escapes in SQLite strings.
        assert_eq!(
            sqlite(r"SELECT 'C:\'; SELECT 2"),
            [r"SELECT 'C:\'", "SELECT 2"]
        );
    }

    #[test]
    fn sqlite_comments_with_semicolons() {
        assert_eq!(
            sqlite("-- head; comment\nSELECT 1; /* a; b */ SELECT 2 -- tail;\n;"),
            ["-- head; comment\nSELECT 1", "/* a; b */ SELECT 2 -- tail;"]
        );
        // Block comments do not nest in SQLite: the first `*/` closes it.
        assert_eq!(
            sqlite("/* a /* b */ SELECT 1; */ SELECT 2;").len(),
            2,
            "the `*/` after SELECT 1 is outside the comment"
        );
    }

    #[test]
    fn sqlite_trigger_bodies() {
        let s = "CREATE TABLE t (a INT, b TEXT);
CREATE TRIGGER t_ai AFTER INSERT ON t
BEGIN
  UPDATE t SET b = CASE WHEN new.a > 0 THEN 'pos;' ELSE 'neg' END WHERE rowid = new.rowid;
  INSERT INTO log VALUES ('inserted; ok');
END;
create temp trigger t2 before delete on t begin select raise(abort, 'no;'); end;
CREATE TEMPORARY TRIGGER IF NOT EXISTS t3 AFTER UPDATE ON t BEGIN SELECT 1; END;
INSERT INTO t VALUES (1, 'x');";
        let got = sqlite(s);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[1].starts_with("CREATE TRIGGER t_ai"));
        assert!(got[1].ends_with("END"), "{}", got[1]);
        assert!(got[2].starts_with("create temp trigger"));
        assert!(got[2].ends_with("end"));
        assert!(got[3].ends_with("END"));
        assert_eq!(got[4], "INSERT INTO t VALUES (1, 'x')");
    }

    #[test]
    fn sqlite_transaction_keywords_outside_triggers_split() {
        assert_eq!(
            sqlite("BEGIN; CREATE TABLE x (a); END;"),
            ["BEGIN", "CREATE TABLE x (a)", "END"]
        );
        // A column named "begin" in a normal statement does not open a body.
        assert_eq!(sqlite("SELECT begin FROM t; SELECT 2").len(), 2);
    }

    #[test]
    fn sqlite_unterminated_input_does_not_panic() {
        for s in [
            "SELECT 'open",
            "SELECT \"open",
            "/* open",
            "SELECT [open",
            "CREATE TRIGGER x BEGIN",
            "'",
            "[",
            "-",
        ] {
            let _ = sqlite(s);
        }
        assert_eq!(sqlite("SELECT 'open; x"), ["SELECT 'open; x"]);
    }

    #[test]
    fn line_numbers_point_at_statement_starts() {
        let s = "SELECT 1;\n\n-- c\nSELECT\n 2;\nSELECT 3";
        let got = with_lines(s, sqlite(s));
        assert_eq!(
            got.iter().map(|s| s.line).collect::<Vec<_>>(),
            [1, 3, 6],
            "{got:?}"
        );
    }

    #[test]
    fn transaction_control_is_recognised() {
        for s in [
            "BEGIN",
            "begin transaction",
            "COMMIT",
            "end",
            "ROLLBACK",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "-- c\nCOMMIT",
            "abort",
        ] {
            assert!(is_transaction_control(s), "{s}");
        }
        for s in [
            "ROLLBACK TO SAVEPOINT a",
            "rollback to a",
            "SAVEPOINT a",
            "BEGIN ATOMIC SELECT 1; END",
            "SELECT begin FROM t",
            "CREATE TABLE commit_log (a int)",
        ] {
            assert!(!is_transaction_control(s), "{s}");
        }
    }

    #[test]
    fn has_code_ignores_comments_and_blanks() {
        assert!(!has_code(""));
        assert!(!has_code("\n-- nothing\n/* at; all */ ;\r\n"));
        assert!(has_code("-- x\nSELECT 1"));
    }
}
