//! Statements that need a client to feed them input, which the runner
//! cannot: `COPY ... FROM STDIN` waits for data forever (holding the lock),
//! and psql meta-commands (`\i`, `\copy`, `\set`, ...) are not SQL at all.
//! The loader refuses both before anything runs.

/// One statement of a file that needs client-side input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientInput {
    /// 1-based line of the file.
    pub(crate) line: usize,
    /// What it is, e.g. `COPY ... FROM STDIN` or `psql meta-command \i`.
    pub(crate) what: String,
    /// What to do instead.
    pub(crate) fix: &'static str,
}

const COPY_FIX: &str = "load the data with INSERT statements, or with a server-side COPY ... FROM '<file on the database server>'";
const META_FIX: &str = "psql meta-commands are not SQL: put the statements they stand for in the file (for \\copy, load the data with INSERT statements or a server-side COPY ... FROM '<file>')";

/// Lexer state outside of code.
#[derive(Clone, PartialEq, Eq)]
enum State {
    Code,
    /// `'...'`; `true` when backslashes escape (`E'...'`).
    Single(bool),
    Double,
    LineComment,
    Block(usize),
    Dollar(String),
}

/// Every statement of `sql` that needs client-side input, in file order.
/// Strings, quoted identifiers, comments and dollar-quoted bodies are
/// skipped, so a function body that mentions `\copy` is not refused.
pub(crate) fn find(sql: &str) -> Vec<ClientInput> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut state = State::Code;
    let mut line = 1;
    let mut line_start = true;
    // Words of the current statement (upper case), with the line it started on.
    let mut words: Vec<String> = Vec::new();
    let mut stmt_line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            if state == State::LineComment {
                state = State::Code;
            }
            line_start = true;
            i += 1;
            continue;
        }
        match &mut state {
            State::Code => {
                if line_start && c == b'\\' {
                    let end = sql[i..]
                        .find(char::is_whitespace)
                        .map_or(b.len(), |e| i + e);
                    out.push(ClientInput {
                        line,
                        what: format!("psql meta-command {}", &sql[i..end]),
                        fix: META_FIX,
                    });
                    // The rest of the line belongs to the meta-command.
                    i = sql[i..].find('\n').map_or(b.len(), |e| i + e);
                    continue;
                }
                if !c.is_ascii_whitespace() {
                    line_start = false;
                }
                match c {
                    b'-' if b.get(i + 1) == Some(&b'-') => state = State::LineComment,
                    b'/' if b.get(i + 1) == Some(&b'*') => {
                        state = State::Block(1);
                        i += 1;
                    }
                    b'\'' => {
                        let escapes = i > 0
                            && matches!(b[i - 1], b'e' | b'E')
                            && (i < 2 || !is_word(b[i - 2]));
                        state = State::Single(escapes);
                    }
                    b'"' => state = State::Double,
                    b'$' => {
                        // `$tag$` opens a dollar-quoted body; `$1` is a parameter.
                        let tag_end = b[i + 1..]
                            .iter()
                            .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                            .map(|p| i + 1 + p);
                        if let Some(e) = tag_end {
                            let tag = &sql[i + 1..e];
                            if b[e] == b'$' && !tag.starts_with(|ch: char| ch.is_ascii_digit()) {
                                state = State::Dollar(sql[i..=e].to_owned());
                                i = e;
                            }
                        }
                    }
                    b';' => {
                        check_copy(&words, stmt_line, &mut out);
                        words.clear();
                    }
                    c if c.is_ascii_alphabetic() || c == b'_' => {
                        let s = i;
                        while i < b.len() && is_word(b[i]) {
                            i += 1;
                        }
                        if words.is_empty() {
                            stmt_line = line;
                        }
                        if words.len() < 64 {
                            words.push(sql[s..i].to_ascii_uppercase());
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            State::Single(escapes) => {
                if *escapes && c == b'\\' {
                    i += 1;
                } else if c == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        state = State::Code;
                    }
                }
            }
            State::Double => {
                if c == b'"' {
                    state = State::Code;
                }
            }
            State::LineComment => {}
            State::Block(depth) => {
                if c == b'*' && b.get(i + 1) == Some(&b'/') {
                    *depth -= 1;
                    i += 1;
                    if *depth == 0 {
                        state = State::Code;
                    }
                } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
                    *depth += 1;
                    i += 1;
                }
            }
            State::Dollar(tag) => {
                if sql[i..].starts_with(tag.as_str()) {
                    i += tag.len();
                    state = State::Code;
                    continue;
                }
            }
        }
        i += 1;
    }
    check_copy(&words, stmt_line, &mut out);
    out
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// `COPY ... FROM STDIN`: the server then waits for the client's data.
fn check_copy(words: &[String], line: usize, out: &mut Vec<ClientInput>) {
    if words.first().map(String::as_str) != Some("COPY") {
        return;
    }
    if words.windows(2).any(|w| w[0] == "FROM" && w[1] == "STDIN") {
        out.push(ClientInput {
            line,
            what: "COPY ... FROM STDIN".into(),
            fix: COPY_FIX,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(sql: &str) -> Vec<(usize, String)> {
        find(sql).into_iter().map(|c| (c.line, c.what)).collect()
    }

    #[test]
    fn copy_from_stdin_in_any_case_and_spacing() {
        assert_eq!(
            lines(
                "CREATE TABLE t (a int);\ncopy t (a)\n  from\tStdIn WITH (FORMAT csv);\n1\n\\.\n"
            ),
            [
                (2, "COPY ... FROM STDIN".to_owned()),
                (5, "psql meta-command \\.".to_owned())
            ]
        );
        assert_eq!(
            lines("COPY t FROM STDIN"),
            [(1, "COPY ... FROM STDIN".to_owned())]
        );
        // A server-side COPY and a COPY TO are fine.
        assert!(lines("COPY t FROM '/srv/data.csv'; COPY t TO '/tmp/x';").is_empty());
    }

    #[test]
    fn meta_commands_at_line_start() {
        assert_eq!(
            lines("\\set ON_ERROR_STOP on\nSELECT 1;\n  \\i other.sql\n\\copy t from 'x.csv'\n"),
            [
                (1, "psql meta-command \\set".to_owned()),
                (3, "psql meta-command \\i".to_owned()),
                (4, "psql meta-command \\copy".to_owned())
            ]
        );
    }

    #[test]
    fn strings_comments_and_bodies_are_not_statements() {
        for sql in [
            "SELECT 'COPY t FROM STDIN';",
            "SELECT E'it\\'s\n\\i not a command';",
            "-- COPY t FROM STDIN\nSELECT 1;",
            "/* \n\\i x.sql\n /* nested */ COPY t FROM STDIN; */ SELECT 1;",
            "CREATE FUNCTION f() RETURNS void AS $body$\n\\copy x\nCOPY t FROM STDIN;\n$body$ LANGUAGE sql;",
            "SELECT \"copy\" FROM stdin_table;",
            "PREPARE p AS SELECT $1;",
        ] {
            assert!(lines(sql).is_empty(), "{sql}: {:?}", lines(sql));
        }
    }
}
