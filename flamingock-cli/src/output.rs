//! Output for people (aligned, optionally coloured tables) and for scripts (JSON).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use flamingock_core::AuditState;

use crate::redact::Redactor;

/// ANSI colours used in tables and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Color {
    Green,
    Red,
    Yellow,
    Cyan,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "32",
            Color::Red => "31",
            Color::Yellow => "33",
            Color::Cyan => "36",
            Color::Dim => "2",
            Color::Bold => "1",
        }
    }
}

/// The colour a state is shown in.
pub(crate) fn state_color(s: AuditState) -> Color {
    match s {
        AuditState::Applied | AuditState::ManualMarkedAsApplied => Color::Green,
        AuditState::Failed | AuditState::RollbackFailed => Color::Red,
        AuditState::Started => Color::Yellow,
        AuditState::RolledBack | AuditState::ManualMarkedAsRolledBack => Color::Cyan,
    }
}

/// Whether colour is on: never with `--no-color`, a non-empty `NO_COLOR`,
/// or when stdout is not a terminal.
pub(crate) fn use_color(no_color_flag: bool) -> bool {
    if no_color_flag {
        return false;
    }
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    std::io::stdout().is_terminal()
}

/// Where output goes, with the colour decision and the redactor every line
/// passes through.
#[derive(Clone)]
pub(crate) struct Out {
    pub(crate) color: bool,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    redactor: Redactor,
    stdout: Arc<Mutex<Box<dyn Write + Send>>>,
    stderr: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("color", &self.color)
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl Out {
    pub(crate) fn stdio(color: bool, json: bool, quiet: bool, redactor: Redactor) -> Out {
        Out {
            color,
            json,
            quiet,
            redactor,
            stdout: Arc::new(Mutex::new(Box::new(std::io::stdout()))),
            stderr: Arc::new(Mutex::new(Box::new(std::io::stderr()))),
        }
    }

    pub(crate) fn paint(&self, c: Color, s: &str) -> String {
        if self.color && !s.is_empty() {
            format!("\x1b[{}m{s}\x1b[0m", c.code())
        } else {
            s.to_owned()
        }
    }

    fn write(target: &Mutex<Box<dyn Write + Send>>, text: &str) {
        let mut w = target.lock().unwrap_or_else(|p| p.into_inner());
        // A closed pipe (`flamingock audit list | head`) is not an error worth reporting.
        let _ = w.write_all(text.as_bytes());
        let _ = w.flush();
    }

    /// Prints `text` (a line is added) on stdout, redacted.
    pub(crate) fn line(&self, text: &str) {
        Self::write(&self.stdout, &format!("{}\n", self.redactor.redact(text)));
    }

    /// Prints raw text on stdout (no newline added), redacted.
    pub(crate) fn raw(&self, text: &str) {
        Self::write(&self.stdout, &self.redactor.redact(text));
    }

    /// Prints `text` (a line is added) on stderr, redacted.
    pub(crate) fn err_line(&self, text: &str) {
        Self::write(&self.stderr, &format!("{}\n", self.redactor.redact(text)));
    }

    /// Raw text on stderr.
    pub(crate) fn err_raw(&self, text: &str) {
        Self::write(&self.stderr, &self.redactor.redact(text));
    }

    /// Informational line for people: stdout normally, stderr in JSON mode
    /// (stdout stays one JSON document), nothing with `-q`.
    pub(crate) fn info(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            self.err_line(text);
        } else {
            self.line(text);
        }
    }

    /// Pretty-prints `value` as the JSON document of the command.
    pub(crate) fn json_doc(&self, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| {
            format!("{{\"error\": {{\"kind\": \"internal\", \"message\": \"cannot serialize output: {e}\"}}}}")
        });
        self.line(&text);
    }

    /// An error for people, on stderr: `error:` in red, then the message.
    pub(crate) fn error(&self, text: &str) {
        let head = self.paint(Color::Red, "error:");
        self.err_line(&format!("{head} {text}"));
    }

    #[cfg(test)]
    pub(crate) fn capture(color: bool, json: bool) -> (Out, Captured) {
        let out = Captured::default();
        let err = Captured::default();
        (
            Out {
                color,
                json,
                quiet: false,
                redactor: Redactor::default(),
                stdout: Arc::new(Mutex::new(Box::new(out.clone()))),
                stderr: Arc::new(Mutex::new(Box::new(err.clone()))),
            },
            out,
        )
    }
}

/// A writer that keeps what was written (tests).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A cell: text and an optional colour.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    pub(crate) fn colored(text: impl Into<String>, color: Color) -> Cell {
        Cell {
            text: text.into(),
            color: Some(color),
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell {
            text: text.to_owned(),
            color: None,
        }
    }
}

/// A table with a header row, columns padded to the widest cell.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The table as text; colour is applied after padding so escape codes
    /// never break the alignment.
    pub(crate) fn render(&self, out: &Out) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(width(&c.text));
            }
        }
        let mut s = String::new();
        let header: Vec<String> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| pad(h, widths[i], i + 1 == n))
            .collect();
        s.push_str(&out.paint(Color::Bold, header.join("  ").trim_end()));
        s.push('\n');
        for r in &self.rows {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let (text, color) = r.get(i).map_or(("", None), |c| (c.text.as_str(), c.color));
                    let padded = pad(text, widths[i], i + 1 == n);
                    match color {
                        Some(c) => {
                            let trimmed = padded.trim_end();
                            let rest = &padded[trimmed.len()..];
                            format!("{}{rest}", out.paint(c, trimmed))
                        }
                        None => padded,
                    }
                })
                .collect();
            s.push_str(cells.join("  ").trim_end());
            s.push('\n');
        }
        s
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize, last: bool) -> String {
    if last {
        return s.to_owned();
    }
    let mut out = s.to_owned();
    for _ in width(s)..w {
        out.push(' ');
    }
    out
}

/// The first line of `s`, at most `max` characters (with `…` when cut).
pub(crate) fn short(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() <= max && first.len() == s.trim_end().len() {
        return first.to_owned();
    }
    let mut out: String = first.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_colour_after_padding() {
        let mut t = Table::new(&["CHANGE", "STATE", "NOTE"]);
        t.row(vec![
            "a".into(),
            Cell::colored("APPLIED", Color::Green),
            "x".into(),
        ]);
        t.row(vec![
            "longer-id".into(),
            Cell::colored("FAILED", Color::Red),
            "".into(),
        ]);
        let (plain, _) = Out::capture(false, false);
        assert_eq!(
            t.render(&plain),
            "CHANGE     STATE    NOTE\na          APPLIED  x\nlonger-id  FAILED\n"
        );
        let (coloured, _) = Out::capture(true, false);
        let text = t.render(&coloured);
        assert!(text.contains("\x1b[32mAPPLIED\x1b[0m  x"), "{text:?}");
        assert!(text.contains("\x1b[31mFAILED\x1b[0m\n"), "{text:?}");
    }

    #[test]
    fn short_cuts_long_and_multiline_text() {
        assert_eq!(short("abc", 10), "abc");
        assert_eq!(short("abcdefghijkl", 5), "abcd…");
        assert_eq!(short("line one\nline two", 40), "line one…");
    }
}
