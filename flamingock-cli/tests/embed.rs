//! `embed_sql_dir!` gives exactly what loading the directory at run time gives,
//! problems included.

use flamingock_cli::sql::SqlChanges;
use flamingock_core::error::ErrorChain as _;

fn dir(name: &str) -> String {
    format!("{}/tests/sql/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn embedded_and_loaded_directories_are_the_same_change_list() {
    let embedded = flamingock_cli::embed_sql_dir!("tests/sql/ok").expect("valid directory");
    let loaded = SqlChanges::load_dir(dir("ok")).expect("valid directory");
    assert_eq!(embedded.files(), loaded.files());
    let ids: Vec<&str> = embedded.files().iter().map(|f| f.id()).collect();
    assert_eq!(ids, ["create-users", "seed-users"]);
    let seed = embedded.get("seed-users").expect("seed-users");
    assert!(seed.rollback().is_some());
    // The file has CRLF line endings: executed and checksummed as LF.
    assert!(!seed.sql().contains('\r'));
    assert_eq!(
        seed.checksum(),
        flamingock_sql::checksum(&seed.sql().replace('\n', "\r\n"))
    );
}

/// `embed_sql_dir!("tests/sql/bad")` does not compile (a `compile_fail`
/// doc test of the macro): the loader's message, checked here, is the
/// compile error.
#[test]
fn every_problem_of_a_refused_directory_is_reported() {
    let loaded = SqlChanges::load_dir(dir("bad")).expect_err("invalid directory");
    let text = loaded.to_string();
    for needle in [
        "0001_no-double-underscore.sql: malformed name",
        "0002__typo-header.sql: unknown header key 'autor'",
        "0003__empty.sql: empty",
        "change id 'typo-header' is used by 2 files",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
}

#[test]
fn other_tools_layouts_embed_as_they_load() {
    use flamingock_cli::sql::Layout;
    let diesel = flamingock_cli::embed_sql_dir!("tests/sql/diesel").expect("diesel layout");
    let loaded = SqlChanges::load_dir(dir("diesel")).expect("diesel layout");
    assert_eq!(diesel.layout(), Layout::Diesel);
    assert_eq!(diesel.files(), loaded.files());
    let ids: Vec<&str> = diesel.files().iter().map(|f| f.id()).collect();
    assert_eq!(
        ids,
        [
            "2024-03-06-170000_create_posts",
            "2024-03-13_170000_add_index"
        ]
    );
    assert!(diesel.files()[0].rollback().is_some(), "down.sql");
    assert_eq!(
        diesel.files()[1].transactional(),
        Some(false),
        "metadata.toml"
    );

    let sqlx = flamingock_cli::embed_sql_dir!("tests/sql/sqlx").expect("sqlx layout");
    assert_eq!(sqlx.layout(), Layout::Sqlx);
    assert_eq!(
        sqlx.files(),
        SqlChanges::load_dir(dir("sqlx")).expect("sqlx").files()
    );
    assert_eq!(sqlx.files()[1].transactional(), Some(false));
    // A layout can be named, as with --layout.
    let named = flamingock_cli::embed_sql_dir!("tests/sql/sqlx", Layout::Sqlx).expect("named");
    assert_eq!(named.files(), sqlx.files());
    let named = SqlChanges::load_dir_as(dir("sqlx"), Layout::Flamingock)
        .expect_err("not this project's names");
    assert!(
        named.chain().to_string().contains("malformed name"),
        "{named}"
    );
}

#[test]
fn a_directory_changed_since_the_build_is_reported_and_the_embedded_list_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("0001__a.sql"), "SELECT 1; -- edited\n").expect("write");
    std::fs::write(tmp.path().join("0002__b.sql"), "SELECT 2;\n").expect("write");
    let embedded: &[(&str, &str)] = &[("0001__a.sql", "SELECT 1;\n")];
    let built_from = tmp.path().display().to_string();
    // The embedded list is what runs, whatever the directory holds now.
    let changes = SqlChanges::from_embedded(
        "changes",
        &built_from,
        flamingock_cli::sql::Layout::Auto,
        embedded,
    )
    .expect("embedded list");
    assert_eq!(changes.len(), 1);
    // The same directory as embedded: nothing to say.
    std::fs::remove_file(tmp.path().join("0002__b.sql")).expect("remove");
    std::fs::write(tmp.path().join("0001__a.sql"), "SELECT 1;\n").expect("write");
    let same = SqlChanges::from_embedded(
        "changes",
        &built_from,
        flamingock_cli::sql::Layout::Auto,
        embedded,
    );
    assert!(same.is_ok());
}
