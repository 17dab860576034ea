//! Splitting a SQL script into statements, the way `psql` does.

/// Splits `sql` on top-level semicolons into statements (trimmed, without
/// their `;`), skipping empty and comment-only ones.
///
/// A semicolon does not split inside a single-quoted string (`'it''s'`,
/// `E'\''`), a quoted identifier (`"a;b"`), a dollar-quoted body
/// (`$$ ... $$`, `$fn$ ... $fn$`), a `--` or (nested) `/* */` comment, or the
/// `BEGIN ... END` body of a `CREATE FUNCTION` / `CREATE PROCEDURE` written
/// in standard SQL (`BEGIN ATOMIC ... END`).
///
/// ```
/// use flamingock_postgres::split_statements;
/// let script = "CREATE TABLE t (s text DEFAULT ';');
///     -- a comment; with a semicolon
///     CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
///     CREATE INDEX CONCURRENTLY t_s ON t (s);";
/// let stmts = split_statements(script);
/// assert_eq!(stmts.len(), 3);
/// assert!(stmts[1].ends_with("LANGUAGE sql"));
/// ```
pub fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    // Whether the current statement has anything besides blanks and comments.
    let mut has_code = false;
    // The first words of the current statement (to recognise CREATE FUNCTION).
    let mut words: Vec<String> = Vec::new();
    let mut begin_depth = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                has_code = true;
                // E'...' strings take backslash escapes.
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'"' => {
                has_code = true;
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => {
                if let Some(tag_len) = dollar_tag(&b[i..]) {
                    has_code = true;
                    let tag = &b[i..i + tag_len];
                    i += tag_len;
                    match find(&b[i..], tag) {
                        Some(pos) => i += pos + tag_len,
                        None => i = b.len(),
                    }
                    continue;
                }
            }
            b';' if begin_depth == 0 => {
                if has_code {
                    out.push(sql[start..i].trim());
                }
                start = i + 1;
                has_code = false;
                words.clear();
                i += 1;
                continue;
            }
            c if is_ident_start(c) => {
                has_code = true;
                let s = i;
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
                let word = sql[s..i].to_ascii_uppercase();
                if is_routine(&words) {
                    match word.as_str() {
                        "BEGIN" | "CASE" => begin_depth += 1,
                        "END" => begin_depth = begin_depth.saturating_sub(1),
                        _ => {}
                    }
                }
                if words.len() < 4 {
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
        out.push(sql[start..].trim());
    }
    out
}

/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`: the only statements whose body
/// may hold top-level semicolons between `BEGIN` and `END`.
fn is_routine(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["CREATE", "FUNCTION" | "PROCEDURE", ..]
            | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
    )
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Length of the dollar-quote tag at the start of `b` (`$$` or `$tag$`).
fn dollar_tag(b: &[u8]) -> Option<usize> {
    if b.get(1) == Some(&b'$') {
        return Some(2);
    }
    let first = *b.get(1)?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first >= 0x80) {
        return None; // `$1` is a parameter, not a quote
    }
    let mut j = 2;
    while j < b.len() {
        match b[j] {
            b'$' => return Some(j + 1),
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => j += 1,
            _ => return None,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_dollar_quotes_strings_identifiers_comments() {
        let s = "CREATE FUNCTION f() RETURNS trigger AS $body$
BEGIN
  PERFORM 1; -- inside; still inside
  RETURN NEW;
END;
$body$ LANGUAGE plpgsql;
DO $$ BEGIN RAISE NOTICE 'a;b'; END $$;
INSERT INTO t VALUES ('it''s; fine', E'back\\'slash;', \"odd;col\");
/* outer; /* nested; */ still comment; */ SELECT 1;
-- trailing; comment";
        let got = split_statements(s);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].ends_with("$body$ LANGUAGE plpgsql"));
        assert_eq!(got[1], "DO $$ BEGIN RAISE NOTICE 'a;b'; END $$");
        assert!(got[2].starts_with("INSERT INTO t"));
        assert!(got[3].ends_with("SELECT 1"));
        assert_eq!(
            split_statements("SELECT $a$ $b$ ; $b$ $a$; SELECT 2").len(),
            2
        );
        assert_eq!(
            split_statements("SELECT $1::int; SELECT a$b FROM t").len(),
            2
        );
    }

    #[test]
    fn postgres_standard_function_bodies_and_concurrently() {
        let got = split_statements(
            "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT a; SELECT a + b; END;
CREATE INDEX CONCURRENTLY i ON t (a);",
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[1], "CREATE INDEX CONCURRENTLY i ON t (a)");
    }

    use super::split_statements;
    use super::split_statements as split;

    #[test]
    fn plain_statements() {
        assert_eq!(
            split("SELECT 1; SELECT 2;\n\nSELECT 3"),
            ["SELECT 1", "SELECT 2", "SELECT 3"]
        );
        assert!(split("").is_empty());
        assert!(split(" ; ;\n ;").is_empty());
    }

    #[test]
    fn quoted_strings_and_identifiers() {
        assert_eq!(
            split("INSERT INTO t VALUES ('a;b', 'it''s; fine'); SELECT \"we;ird\"\"x\" FROM t"),
            [
                "INSERT INTO t VALUES ('a;b', 'it''s; fine')",
                "SELECT \"we;ird\"\"x\" FROM t"
            ]
        );
        assert_eq!(
            split(r"SELECT E'back\'slash;'; SELECT 2"),
            [r"SELECT E'back\'slash;'", "SELECT 2"]
        );
        // A plain string ending in a backslash is not an escape.
        assert_eq!(
            split(r"SELECT 'C:\'; SELECT 2"),
            [r"SELECT 'C:\'", "SELECT 2"]
        );
    }

    #[test]
    fn comments() {
        assert_eq!(
            split("-- first; comment\nSELECT 1; /* block; /* nested; */ still; */ SELECT 2;\n-- only a comment;"),
            ["-- first; comment\nSELECT 1", "/* block; /* nested; */ still; */ SELECT 2"]
        );
        assert!(split("-- nothing here\n/* nor; here */").is_empty());
    }

    #[test]
    fn dollar_quotes() {
        let s = "CREATE FUNCTION f() RETURNS trigger AS $body$
BEGIN
  PERFORM 1; -- inside
  RETURN NEW;
END;
$body$ LANGUAGE plpgsql;
DO $$ BEGIN RAISE NOTICE 'a;b'; END $$;
SELECT $1::int, a$b FROM t";
        let got = split(s);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].ends_with("$body$ LANGUAGE plpgsql"));
        assert_eq!(got[1], "DO $$ BEGIN RAISE NOTICE 'a;b'; END $$");
        assert_eq!(got[2], "SELECT $1::int, a$b FROM t");
        // A different tag inside does not close the quote.
        assert_eq!(split("SELECT $a$ $b$ ; $b$ $a$; SELECT 2").len(), 2);
    }

    #[test]
    fn sql_standard_function_bodies() {
        let s = "CREATE OR REPLACE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;
  SELECT a + b;
END;
CREATE INDEX CONCURRENTLY i ON t (a);
BEGIN; SELECT 1; END;";
        let got = split(s);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].ends_with("END"));
        assert_eq!(got[1], "CREATE INDEX CONCURRENTLY i ON t (a)");
        assert_eq!(&got[2..], ["BEGIN", "SELECT 1", "END"]);
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for s in [
            "SELECT 'open",
            "SELECT \"open",
            "SELECT $$ open",
            "/* open",
            "SELECT $a",
            "$",
        ] {
            let _ = split(s);
        }
        assert_eq!(split("SELECT 'open; x"), ["SELECT 'open; x"]);
    }
}
