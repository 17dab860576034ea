//! The README's `Cargo.toml` snippet and this crate's dependencies name the
//! same crates, so the doc tests compile the README's examples with what the
//! README tells users to add, no more.

use std::collections::BTreeSet;

const README: &str = include_str!("../../../README.md");
const MANIFEST: &str = include_str!("../Cargo.toml");

/// Names of the `[dependencies]` entries of a manifest text.
fn dependency_names(toml: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_deps = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            if let Some(name) = line.split(['=', '.', ' ']).next() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_readme_snippet_lists_this_crates_dependencies() {
    let snippet = README
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a ```toml block with the dependencies to add");
    let wanted = dependency_names(snippet);
    assert!(!wanted.is_empty(), "no [dependencies] in:\n{snippet}");
    assert_eq!(wanted, dependency_names(MANIFEST));
}

#[test]
fn the_readme_has_compiled_examples() {
    // At least the first example is a complete program, not `ignore`d.
    assert!(README.contains("```rust,no_run\n"), "no compiled example");
}
