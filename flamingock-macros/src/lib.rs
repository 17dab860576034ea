//! # flamingock-macros
//!
//! `#[change]` on an async function (use it as `#[flamingock::change]`), and
//! compile-time support for file-based changes: use that through
//! `flamingock::embed_sql_dir!` (or `flamingock_sql::embed_sql_dir!`), which turns the
//! embedded files into the same change list `flamingock apply --changes DIR`
//! loads at run time:
//!
//! ```text
//! let changes = flamingock::embed_sql_dir!("changes")?;
//! ```
//!
//! The macro here, [`embed_sql_files!`], only lists the directory (relative to
//! the invoking crate's `Cargo.toml`) at compile time and expands to a slice
//! of `(file name, content)` pairs whose contents are `include_str!`s, so
//! editing a file rebuilds the crate. Every check (file names, headers,
//! duplicates, empty files) happens in `flamingock-sql`, the one parser
//! the CLI uses too, so the embedded list and the loaded one cannot differ.
//!
//! Adding or removing a file is not something `include_str!` can see: add
//! `println!("cargo:rerun-if-changed=changes");` to the crate's `build.rs`.
//!
#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::path::{Path, PathBuf};

mod change;

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::LitStr;

/// Declares a change as an async function taking its context:
///
/// ```text
/// #[flamingock::change(id = "create-users", order = "0001", author = "ana")]
/// async fn create_users(tx: &mut PgContext) -> ChangeResult {
///     tx.execute("CREATE TABLE users (id bigint PRIMARY KEY)").await?;
///     Ok(())
/// }
/// // ...
/// Stage::new("schema").change(create_users)
/// ```
///
/// The function becomes a unit struct of the same name implementing
/// `Change`, with the same metadata a hand-written `meta()` gives.
/// Arguments: `id` and `order` (required, strings; an empty or
/// unprintable id is a compile error), `author`, `description`, `target`
/// (the target id), `transactional = false`, `recovery = "always-retry"`,
/// `rollback = path::to::async_fn` (same signature), `stage = "schema"`
/// (registers it, so that `Stage::discover("schema")` collects every change
/// declared for that stage anywhere in the binary), `target_type = T`
/// (when the context type is not tied to one target, e.g. a
/// `DependencyTarget`), and `crate = flamingock_core` when the application
/// depends on `flamingock-core` rather than the `flamingock` facade.
#[proc_macro_attribute]
pub fn change(args: TokenStream, item: TokenStream) -> TokenStream {
    match change::expand(args.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `embed_sql_files!("dir")` expands to a `&'static [(&'static str, &'static str)]`
/// of `(name, content)` for what the run-time loader reads in `dir`
/// (relative to the invoking crate's manifest directory), sorted by name:
/// every regular, non-hidden `*.sql` file directly in it, and a diesel
/// migration's `up.sql`, `down.sql` and `metadata.toml` as `<dir>/<file>`.
#[proc_macro]
pub fn embed_sql_files(input: TokenStream) -> TokenStream {
    let lit = match syn::parse::<LitStr>(input) {
        Ok(l) => l,
        Err(e) => return e.to_compile_error().into(),
    };
    match expand(&lit) {
        Ok(ts) => ts.into(),
        Err(msg) => syn::Error::new(lit.span(), msg).to_compile_error().into(),
    }
}

/// `embed_sql_dir_path!("dir")`: the absolute path of `dir` (relative to
/// the invoking crate's manifest directory) when it was embedded, so that a
/// debug build can tell when the directory changed after it was built.
#[proc_macro]
pub fn embed_sql_dir_path(input: TokenStream) -> TokenStream {
    let lit = match syn::parse::<LitStr>(input) {
        Ok(l) => l,
        Err(e) => return e.to_compile_error().into(),
    };
    let base = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = base.join(lit.value());
    let text = LitStr::new(&path.to_string_lossy(), Span::call_site());
    quote!(#text).into()
}

fn expand(lit: &LitStr) -> Result<proc_macro2::TokenStream, String> {
    let rel = lit.value();
    let base = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or("CARGO_MANIFEST_DIR is not set: build with cargo")?;
    let dir = base.join(&rel);
    let files = list(&dir).map_err(|e| format!("cannot read SQL change directory {rel:?}: {e}"))?;
    let entries = files.iter().map(|(name, path)| {
        let name = LitStr::new(name, Span::call_site());
        let path = LitStr::new(path, Span::call_site());
        quote! { (#name, ::core::include_str!(#path)) }
    });
    Ok(quote! {
        {
            const FILES: &[(&str, &str)] = &[ #(#entries),* ];
            FILES
        }
    })
}

/// `(name, absolute path)` of what the run-time loader reads in `dir`,
/// sorted: the regular, non-hidden `*.sql` files by file name, and for each
/// subdirectory holding `up.sql` (diesel's layout) its `up.sql`, `down.sql`
/// and `metadata.toml` as `<subdirectory>/<file>`.
fn list(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{e} ({})", dir.display()))?;
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("path {} is not valid UTF-8", p.display()))
    };
    for entry in rd {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(format!(
                "file name {:?} is not valid UTF-8",
                entry.file_name()
            ));
        };
        if path.is_dir() {
            if path.join("up.sql").is_file() {
                for leaf in ["up.sql", "down.sql", "metadata.toml"] {
                    let file = path.join(leaf);
                    if file.is_file() {
                        out.push((format!("{name}/{leaf}"), utf8(&file)?));
                    }
                }
            }
            continue;
        }
        if !path.is_file() {
            continue;
        }
        // The same selection as the run-time loader: `*.sql` (any case, so
        // that the loader can reject `.SQL` by name), hidden files left out.
        if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".sql") {
            continue;
        }
        out.push((name, utf8(&path)?));
    }
    out.sort();
    Ok(out)
}
