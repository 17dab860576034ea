//! Other tools' migration layouts, read as they are: sqlx, diesel, Flyway
//! and refinery directories load without renaming a file.
//!
//! | layout | files | change id | order |
//! |---|---|---|---|
//! | `flamingock` | `<order>__<id>.sql`, `<order>__<id>.rollback.sql` | `<id>` | `<order>`, as text |
//! | `sqlx` | `<version>_<description>.sql`, or `.up.sql` with `.down.sql` | `<version>_<description>` | the version, as a number |
//! | `diesel` | `<version>_<name>/up.sql` and `down.sql`, `metadata.toml` | `<version>_<name>` (the directory) | the version, as text (diesel's rule) |
//! | `flyway` | `V<version>__<description>.sql`, undo `U<version>__<description>.sql` | the file name without `.sql` | the version's parts (split at `.` and `_`), as numbers |
//! | `refinery` | `V<n>__<name>.sql`, `U<n>__<name>.sql` (unversioned) | the file name without `.sql` | `<n>`, as a number |
//!
//! Numeric versions become orders zero-padded to the widest version of the
//! directory, so they run in each tool's own order (`2` before `10`).
//! What a layout says about transactions is kept: sqlx's `-- no-transaction`
//! first line and diesel's `run_in_transaction = false` make the change
//! `transactional=false`. A down or undo file is the change's rollback file.
//! Flyway's repeatable migrations (`R__`) are refused: they run again
//! whenever their content changes, and a change here runs once.
//!
//! `auto` (the default) recognises the layout from the names and refuses a
//! directory whose names belong to more than one, listing them.

use std::fmt;

/// How the files of a change directory are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Recognise the layout from the names.
    #[default]
    Auto,
    /// This project's `<order>__<id>.sql`.
    Flamingock,
    /// sqlx: `<version>_<description>[.up|.down].sql`.
    Sqlx,
    /// diesel: `<version>_<name>/up.sql|down.sql`.
    Diesel,
    /// Flyway: `V<version>__<description>.sql`, `U…` undo files.
    Flyway,
    /// refinery: `V<n>__<name>.sql`, `U<n>__<name>.sql` unversioned.
    Refinery,
}

impl Layout {
    /// Every layout, `auto` first.
    pub const ALL: [Layout; 6] = [
        Layout::Auto,
        Layout::Flamingock,
        Layout::Sqlx,
        Layout::Diesel,
        Layout::Flyway,
        Layout::Refinery,
    ];
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Layout, String> {
        Layout::ALL
            .into_iter()
            .find(|l| l.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown layout '{s}': expected one of {}",
                    Layout::ALL.map(|l| l.to_string()).join(", ")
                )
            })
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Auto => "auto",
            Layout::Flamingock => "flamingock",
            Layout::Sqlx => "sqlx",
            Layout::Diesel => "diesel",
            Layout::Flyway => "flyway",
            Layout::Refinery => "refinery",
        })
    }
}

/// A file name read in a layout: the version's numeric parts (empty for
/// this project's layout, whose order is text), the order text, the id, and
/// whether it is a rollback (down, undo) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) version: Vec<u64>,
    pub(crate) order: String,
    pub(crate) id: String,
    pub(crate) rollback: bool,
}

/// What a name looks like, for `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Looks {
    Flamingock,
    Sqlx,
    /// `V<digits…>__`: Flyway or refinery.
    Versioned,
    /// `U<digits…>__`: Flyway's undo or refinery's unversioned.
    U,
    /// `R__`: Flyway's repeatable.
    Repeatable,
}

fn looks(file: &str) -> Looks {
    let stem = file.strip_suffix(".sql").unwrap_or(file);
    let (first, rest) = stem.split_at(stem.chars().next().map_or(0, char::len_utf8));
    let version_then = |s: &str| {
        s.split_once("__").is_some_and(|(v, _)| {
            !v.is_empty()
                && v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
        })
    };
    match first {
        "V" if version_then(rest) => return Looks::Versioned,
        "U" if version_then(rest) => return Looks::U,
        "R" if rest.starts_with("__") => return Looks::Repeatable,
        _ => {}
    }
    let digits = stem.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && stem[digits..].starts_with('_') && !stem[digits..].starts_with("__") {
        return Looks::Sqlx;
    }
    Looks::Flamingock
}

/// The layout of a directory holding these `.sql` file names and
/// `diesel_dirs` subdirectories with an `up.sql`: the one most names follow
/// (the others are then reported as malformed names of that layout, each
/// with its file); an error when two layouts are equally common (naming an
/// example of each) or when U files leave Flyway and refinery apart.
pub(crate) fn detect(files: &[String], diesel_dirs: &[String]) -> Result<Layout, String> {
    // (kind, count, example), in order of first appearance.
    let mut seen: Vec<(Layout, &'static str, usize, String)> = Vec::new();
    let mut note = |layout: Layout, kind: &'static str, example: &str| match seen
        .iter_mut()
        .find(|s| s.0 == layout)
    {
        Some(s) => s.2 += 1,
        None => seen.push((layout, kind, 1, example.to_owned())),
    };
    let mut u = false;
    for f in files {
        match looks(f) {
            Looks::Flamingock => note(Layout::Flamingock, "flamingock (<order>__<id>.sql)", f),
            Looks::Sqlx => note(Layout::Sqlx, "sqlx (<version>_<description>.sql)", f),
            Looks::Versioned | Looks::Repeatable | Looks::U => {
                u |= looks(f) == Looks::U;
                note(
                    Layout::Flyway,
                    "flyway or refinery (V<version>__<name>.sql)",
                    f,
                )
            }
        }
    }
    for d in diesel_dirs {
        note(Layout::Diesel, "diesel (<version>_<name>/up.sql)", d);
    }
    let most = seen.iter().map(|s| s.2).max().unwrap_or(0);
    let leaders: Vec<&(Layout, &'static str, usize, String)> =
        seen.iter().filter(|s| s.2 == most).collect();
    match leaders.as_slice() {
        [] => Ok(Layout::Flamingock),
        [(Layout::Flyway, ..)] if u => Err(
            "U<version>__ files are undo migrations in Flyway and unversioned migrations \
             in refinery: say which with --layout flyway or --layout refinery"
                .into(),
        ),
        // Flyway reads every refinery name the same way (integer versions);
        // only U files tell them apart.
        [(layout, ..)] => Ok(*layout),
        many => Err(format!(
            "the names belong to {} layouts as often: {}; a directory holds one tool's migrations (or give --layout)",
            many.len(),
            many.iter()
                .map(|(_, k, n, e)| format!("{n} {k}, e.g. {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

fn number(part: &str, what: &str) -> Result<u64, String> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} '{part}' is not a number"));
    }
    part.parse()
        .map_err(|_| format!("{what} '{part}' is too large (at most 20 digits)"))
}

/// Reads a `.sql` file name (for diesel: `<dir>/up.sql` or `<dir>/down.sql`)
/// in `layout` (not `Auto`); this project's own layout is read by the
/// loader itself.
pub(crate) fn parse(layout: Layout, file: &str) -> Result<Parsed, String> {
    match layout {
        Layout::Sqlx => {
            let stem = file
                .strip_suffix(".sql")
                .ok_or("the extension must be `.sql` in lower case")?;
            let (stem, rollback) = if let Some(s) = stem.strip_suffix(".down") {
                (s, true)
            } else {
                (stem.strip_suffix(".up").unwrap_or(stem), false)
            };
            let (version, description) = stem
                .split_once('_')
                .ok_or("expected <version>_<description>.sql (sqlx)")?;
            if description.is_empty() {
                return Err("the description (after `_`) is empty".into());
            }
            if description.starts_with('_') {
                return Err(
                    "`__` after the version: that is this project's <order>__<id>.sql".into(),
                );
            }
            let v = number(version, "the version")?;
            Ok(Parsed {
                version: vec![v],
                order: String::new(),
                id: stem.to_owned(),
                rollback,
            })
        }
        Layout::Diesel => {
            let (dir, leaf) = file
                .split_once('/')
                .ok_or("expected <version>_<name>/up.sql (diesel)")?;
            let rollback = match leaf {
                "up.sql" => false,
                "down.sql" => true,
                other => {
                    return Err(format!(
                        "'{other}': a diesel migration holds up.sql and down.sql"
                    ))
                }
            };
            // diesel orders versions as text (its own rule: a version is a
            // string), so `2024-03-13_x` runs after `2024-03-06-170000_y`.
            let version = dir.split('_').next().unwrap_or_default();
            if version.is_empty()
                || !version.starts_with(|c: char| c.is_ascii_digit())
                || !version.chars().all(|c| c.is_ascii_digit() || c == '-')
            {
                return Err(format!(
                    "the directory '{dir}' does not start with a version (digits and '-') and `_<name>`"
                ));
            }
            if !dir.contains('_') {
                return Err(format!(
                    "the directory '{dir}' has no `_<name>` after its version"
                ));
            }
            Ok(Parsed {
                version: Vec::new(),
                order: version.to_owned(),
                id: dir.to_owned(),
                rollback,
            })
        }
        Layout::Flyway | Layout::Refinery => {
            let stem = file
                .strip_suffix(".sql")
                .ok_or("the extension must be `.sql` in lower case")?;
            if stem.starts_with("R__") {
                return Err(
                    "Flyway repeatable migrations (R__) run again whenever their content changes, \
                     and a change here runs once: move the statements into a versioned file, or \
                     keep the file out of this directory"
                        .into(),
                );
            }
            let (prefix, rest) = stem.split_at(stem.chars().next().map_or(0, char::len_utf8));
            let undo = match (prefix, layout) {
                ("V", _) => false,
                ("U", Layout::Flyway) => true,
                ("U", _) => false,
                _ => return Err("expected V<version>__<description>.sql".into()),
            };
            let (version, description) = rest
                .split_once("__")
                .ok_or("no `__` between the version and the description")?;
            if description.is_empty() {
                return Err("the description (after `__`) is empty".into());
            }
            let parts: Vec<u64> = if layout == Layout::Flyway {
                version
                    .split(['.', '_'])
                    .map(|p| number(p, "the version part"))
                    .collect::<Result<_, _>>()?
            } else {
                vec![number(version, "the version")?]
            };
            // An undo file belongs to the versioned file of its version.
            let id = if undo {
                format!("V{rest}")
            } else {
                stem.to_owned()
            };
            Ok(Parsed {
                version: parts,
                order: String::new(),
                id,
                rollback: undo,
            })
        }
        Layout::Auto | Layout::Flamingock => Err(format!("no foreign layout to read {file} with")),
    }
}

/// Turns the versions of a directory into orders: each numeric part padded
/// to the widest of its position, parts joined by `.` (so text order is the
/// tool's numeric order).
pub(crate) fn fill_orders(parsed: &mut [Parsed]) {
    let mut widths: Vec<usize> = Vec::new();
    // Text-ordered versions (diesel) keep their order as it is.
    for p in parsed.iter().filter(|p| !p.version.is_empty()) {
        for (i, v) in p.version.iter().enumerate() {
            let w = v.to_string().len();
            match widths.get_mut(i) {
                Some(m) => *m = (*m).max(w),
                None => widths.push(w),
            }
        }
    }
    for p in parsed.iter_mut().filter(|p| !p.version.is_empty()) {
        // Missing trailing parts count as 0 (Flyway: 1 = 1.0).
        let parts: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{:0w$}", p.version.get(i).copied().unwrap_or(0)))
            .collect();
        p.order = parts.join(".");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn layouts_are_recognised_and_mixtures_refused() {
        assert_eq!(
            detect(&names(&["0001__a.sql", "0002__b.sql"]), &[]),
            Ok(Layout::Flamingock)
        );
        assert_eq!(
            detect(
                &names(&[
                    "20230101000000_create_users.sql",
                    "20230102000000_add.up.sql"
                ]),
                &[]
            ),
            Ok(Layout::Sqlx)
        );
        assert_eq!(
            detect(&names(&["V1__init.sql", "V1.1__more.sql"]), &[]),
            Ok(Layout::Flyway)
        );
        assert_eq!(
            detect(&[], &names(&["2020-01-01-000000_init"])),
            Ok(Layout::Diesel)
        );
        let mixed = detect(&names(&["0001__a.sql", "V2__b.sql"]), &[]).expect_err("refused");
        assert!(
            mixed.contains("2 layouts") && mixed.contains("V2__b.sql"),
            "{mixed}"
        );
        let u = detect(&names(&["V1__a.sql", "U1__a.sql"]), &[]).expect_err("refused");
        assert!(u.contains("--layout flyway"), "{u}");
    }

    #[test]
    fn versions_order_as_numbers() {
        let mut p: Vec<Parsed> = ["V1__a.sql", "V1.10__c.sql", "V1.2__b.sql", "V2__d.sql"]
            .iter()
            .map(|f| parse(Layout::Flyway, f).expect("parse"))
            .collect();
        fill_orders(&mut p);
        let mut orders: Vec<(&str, &str)> = p
            .iter()
            .map(|x| (x.order.as_str(), x.id.as_str()))
            .collect();
        orders.sort();
        let ids: Vec<&str> = orders.iter().map(|o| o.1).collect();
        assert_eq!(ids, ["V1__a", "V1.2__b", "V1.10__c", "V2__d"]);
        assert_eq!(orders[0].0, "1.00");

        let undo = parse(Layout::Flyway, "U1.2__b.sql").expect("undo");
        assert!(undo.rollback);
        assert_eq!(undo.id, "V1.2__b");
        assert!(
            !parse(Layout::Refinery, "U3__x.sql")
                .expect("unversioned")
                .rollback
        );
        assert!(parse(Layout::Flyway, "R__views.sql")
            .expect_err("refused")
            .contains("repeatable"));

        let s = parse(Layout::Sqlx, "20230101000000_create_users.down.sql").expect("sqlx");
        assert_eq!(
            (s.id.as_str(), s.rollback),
            ("20230101000000_create_users", true)
        );
        let d = parse(Layout::Diesel, "2020-01-01-000000_init/up.sql").expect("diesel");
        assert_eq!(
            (d.order.as_str(), d.id.as_str()),
            ("2020-01-01-000000", "2020-01-01-000000_init")
        );
        // Real names (vaultwarden's SQLite migrations): diesel's text order,
        // a version without time included.
        let mut v: Vec<Parsed> = [
            "2024-03-13_170000_sso_userscascade/up.sql",
            "2024-03-06-170000_add_sso_users/up.sql",
            "2024-06-05-131359_add_2fa_duo_store/up.sql",
        ]
        .iter()
        .map(|f| parse(Layout::Diesel, f).expect("diesel"))
        .collect();
        fill_orders(&mut v);
        v.sort_by(|a, b| a.order.cmp(&b.order));
        let ids: Vec<&str> = v.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "2024-03-06-170000_add_sso_users",
                "2024-03-13_170000_sso_userscascade",
                "2024-06-05-131359_add_2fa_duo_store"
            ]
        );
        assert!(parse(Layout::Sqlx, "x_a.sql")
            .expect_err("refused")
            .contains("not a number"));
    }
}
