//! # flamingock-macros
//!
//! Compile-time support for [`flamingock-cli`]'s file-based changes. Use it
//! through the re-export `flamingock_cli::embed_sql_dir!`, which turns the
//! embedded files into the same change list `flamingock apply --changes DIR`
//! loads at run time:
//!
//! ```text
//! let changes = flamingock_cli::embed_sql_dir!("changes")?;
//! ```
//!
//! The macro here, [`embed_sql_files!`], only lists the directory (relative to
//! the invoking crate's `Cargo.toml`) at compile time and expands to a slice
//! of `(file name, content)` pairs whose contents are `include_str!`s, so
//! editing a file rebuilds the crate. Every check (file names, headers,
//! duplicates, empty files) happens in `flamingock_cli::sql`, the one parser
//! the CLI uses too, so the embedded list and the loaded one cannot differ.
//!
//! Adding or removing a file is not something `include_str!` can see: add
//! `println!("cargo:rerun-if-changed=changes");` to the crate's `build.rs`.
//!
//! [`flamingock-cli`]: https://docs.rs/flamingock-cli
#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::LitStr;

/// `embed_sql_files!("dir")` expands to a `&'static [(&'static str, &'static str)]`
/// of `(file name, file content)` for every regular `*.sql` file directly in
/// `dir` (relative to the invoking crate's manifest directory), sorted by
/// name, hidden files left out: the files the run-time loader reads.
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

/// `(file name, absolute path)` of the regular, non-hidden files in `dir`, sorted.
fn list(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{e} ({})", dir.display()))?;
    for entry in rd {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(format!(
                "file name {:?} is not valid UTF-8",
                entry.file_name()
            ));
        };
        // The same selection as the run-time loader: `*.sql` (any case, so
        // that the loader can reject `.SQL` by name), hidden files left out.
        if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".sql") {
            continue;
        }
        let abs = path
            .to_str()
            .ok_or_else(|| format!("path {} is not valid UTF-8", path.display()))?
            .to_owned();
        out.push((name, abs));
    }
    out.sort();
    Ok(out)
}
