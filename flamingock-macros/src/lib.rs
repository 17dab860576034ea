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
/// `rollback = path::to::async_fn` (same signature), `check =
/// path::to::async_fn` (the "already in place" check: same argument,
/// returning `Result<bool, BoxError>`; see `Change::is_applied`),
/// `stage = "schema"`
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

/// Behind `embed_sql_dir!` (of `flamingock` and `flamingock-cli`):
/// `embed_sql_dir_impl!(path::to::flamingock_sql, "dir", Layout)` reads
/// `dir` (relative to the invoking crate's manifest directory) with the
/// loader of `flamingock-sql` at compile time, so a malformed name, a
/// duplicate id, an empty file or a bad header is a compile error with the
/// loader's own message; then expands to
/// `SqlChanges::from_embedded(dir, absolute dir, layout, entries)`, the
/// entries' contents as `include_str!`s (editing a file rebuilds the crate).
#[doc(hidden)]
#[proc_macro]
pub fn embed_sql_dir_impl(input: TokenStream) -> TokenStream {
    let input = proc_macro2::TokenStream::from(input);
    // The path to flamingock-sql as the caller sees it (`$crate::sql`), up
    // to the first comma; then the directory and the layout.
    let mut tokens = input.into_iter().peekable();
    let mut krate = proc_macro2::TokenStream::new();
    for t in tokens.by_ref() {
        if matches!(&t, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
            break;
        }
        krate.extend([t]);
    }
    let rest: proc_macro2::TokenStream = tokens.collect();
    let parsed = syn::parse::Parser::parse2(
        |input: syn::parse::ParseStream<'_>| {
            let dir: LitStr = input.parse()?;
            input.parse::<syn::Token![,]>()?;
            let layout: syn::Ident = input.parse()?;
            Ok((dir, layout))
        },
        rest,
    );
    let (dir, layout) = match parsed {
        Ok(p) => p,
        Err(e) => return e.to_compile_error().into(),
    };
    match embed(&krate, &dir, &layout) {
        Ok(ts) => ts.into(),
        Err(msg) => syn::Error::new(dir.span(), msg).to_compile_error().into(),
    }
}

fn embed(
    krate: &proc_macro2::TokenStream,
    lit: &LitStr,
    layout: &syn::Ident,
) -> Result<proc_macro2::TokenStream, String> {
    let rel = lit.value();
    let base = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or("CARGO_MANIFEST_DIR is not set: build with cargo")?;
    let dir = base.join(&rel);
    let chosen: flamingock_sql::Layout = layout.to_string().to_ascii_lowercase().parse()?;
    let files = list(&dir).map_err(|e| format!("cannot read SQL change directory {rel:?}: {e}"))?;
    // The run-time loader, at compile time.
    let mut read = Vec::with_capacity(files.len());
    for (name, path) in &files {
        let content =
            std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot be read: {e}"))?;
        read.push((name.clone(), content));
    }
    if let Err(e) = flamingock_sql::SqlChanges::from_dir_entries(&rel, chosen, read) {
        return Err(e.to_string());
    }
    let entries = files.iter().map(|(name, path)| {
        let name = LitStr::new(name, Span::call_site());
        let path = LitStr::new(path, Span::call_site());
        quote! { (#name, ::core::include_str!(#path)) }
    });
    let abs = LitStr::new(&dir.to_string_lossy(), Span::call_site());
    Ok(quote! {
        #krate::SqlChanges::from_embedded(
            #lit,
            #abs,
            #krate::Layout::#layout,
            &[ #(#entries),* ],
        )
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
