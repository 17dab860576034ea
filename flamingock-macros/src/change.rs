//! `#[change(...)]`: an async function as a Flamingock change.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, Path, Token, Type};

/// The attribute's arguments.
struct Args {
    id: LitStr,
    order: LitStr,
    author: Option<LitStr>,
    description: Option<LitStr>,
    target: Option<LitStr>,
    transactional: Option<bool>,
    recovery: Option<LitStr>,
    rollback: Option<Path>,
    check: Option<Path>,
    target_type: Option<Type>,
    stage: Option<LitStr>,
    krate: Path,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let span = input.span();
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        let mut id = None;
        let mut order = None;
        let mut author = None;
        let mut description = None;
        let mut target = None;
        let mut transactional = None;
        let mut recovery = None;
        let mut rollback = None;
        let mut check = None;
        let mut target_type = None;
        let mut stage = None;
        let mut krate = None;
        for meta in metas {
            let Meta::NameValue(nv) = &meta else {
                return Err(syn::Error::new_spanned(
                    &meta,
                    "expected `name = value` (id, order, author, description, target, \
                     transactional, recovery, rollback, check, stage, target_type, crate)",
                ));
            };
            let name = nv
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let text = || -> syn::Result<LitStr> {
                match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => Ok(s.clone()),
                    other => Err(syn::Error::new_spanned(
                        other,
                        format!("`{name}` takes a string literal"),
                    )),
                }
            };
            let path = || -> syn::Result<Path> {
                match &nv.value {
                    Expr::Path(p) => Ok(p.path.clone()),
                    other => Err(syn::Error::new_spanned(
                        other,
                        format!("`{name}` takes a path"),
                    )),
                }
            };
            match name.as_str() {
                "id" => id = Some(text()?),
                "order" => order = Some(text()?),
                "author" => author = Some(text()?),
                "description" => description = Some(text()?),
                "target" => target = Some(text()?),
                "stage" => stage = Some(text()?),
                "recovery" => {
                    let r = text()?;
                    if !matches!(r.value().as_str(), "manual-intervention" | "always-retry") {
                        return Err(syn::Error::new_spanned(
                            r,
                            "recovery is \"manual-intervention\" (the default) or \"always-retry\"",
                        ));
                    }
                    recovery = Some(r);
                }
                "transactional" => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => transactional = Some(b.value),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`transactional` takes true or false",
                        ))
                    }
                },
                "rollback" => rollback = Some(path()?),
                "check" => check = Some(path()?),
                "target_type" => {
                    let v = &nv.value;
                    target_type = Some(syn::parse2::<Type>(quote!(#v))?);
                }
                "crate" => krate = Some(path()?),
                _ => {
                    return Err(syn::Error::new_spanned(
                        &nv.path,
                        format!(
                            "unknown argument `{name}`: expected id, order, author, description, \
                             target, transactional, recovery, rollback, check, stage, target_type or crate"
                        ),
                    ))
                }
            }
        }
        let id = id.ok_or_else(|| syn::Error::new(span, "missing `id = \"...\"`"))?;
        let order = order.ok_or_else(|| syn::Error::new(span, "missing `order = \"...\"`"))?;
        // The checks the runner's validation makes, at compile time.
        let value = id.value();
        if value.is_empty() {
            return Err(syn::Error::new_spanned(&id, "the change id is empty"));
        }
        if value.len() > 255 {
            return Err(syn::Error::new_spanned(
                &id,
                format!("the change id is {} bytes long (at most 255)", value.len()),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(syn::Error::new_spanned(
                &id,
                "the change id holds a control character",
            ));
        }
        if order.value().is_empty() {
            return Err(syn::Error::new_spanned(&order, "the order is empty"));
        }
        Ok(Args {
            id,
            order,
            author,
            description,
            target,
            transactional,
            recovery,
            rollback,
            check,
            target_type,
            stage,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::flamingock)),
        })
    }
}

/// Expands `#[change(args)] async fn name(ctx: &mut Ctx) -> ChangeResult { .. }`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: Args = syn::parse2(args)?;
    let func: ItemFn = syn::parse2(item)?;
    if func.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            func.sig.fn_token,
            "a change is an `async fn`",
        ));
    }
    let ctx_ty = match (func.sig.inputs.len(), func.sig.inputs.first()) {
        (1, Some(FnArg::Typed(pt))) => match &*pt.ty {
            Type::Reference(r) if r.mutability.is_some() => (*r.elem).clone(),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "a change takes its context as `&mut Context` (e.g. `tx: &mut PgContext`)",
                ))
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                &func.sig.inputs,
                "a change takes one argument, its context: `tx: &mut PgContext`",
            ))
        }
    };
    let krate = &args.krate;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let attrs = &func.attrs;
    let body_fn = format_ident!("__flamingock_apply_{}", name);
    let mut inner = func.clone();
    inner.sig.ident = body_fn.clone();
    inner.vis = syn::Visibility::Inherited;
    inner.attrs.clear();
    let target_ty = match &args.target_type {
        Some(t) => quote!(#t),
        None => quote!(<#ctx_ty as #krate::ChangeContext>::Target),
    };
    let id = &args.id;
    let order = &args.order;
    let mut meta = quote!(#krate::ChangeMeta::new(#id).order(#order));
    if let Some(a) = &args.author {
        meta = quote!(#meta.author(#a));
    }
    if let Some(d) = &args.description {
        meta = quote!(#meta.description(#d));
    }
    if let Some(t) = &args.target {
        meta = quote!(#meta.target(#t));
    }
    if let Some(t) = args.transactional {
        meta = quote!(#meta.transactional(#t));
    }
    if let Some(r) = &args.recovery {
        let variant = match r.value().as_str() {
            "always-retry" => quote!(AlwaysRetry),
            _ => quote!(ManualIntervention),
        };
        meta = quote!(#meta.recovery(#krate::RecoveryStrategy::#variant));
    }
    let rollback = args.rollback.as_ref().map(|r| {
        quote! {
            fn rollback(
                &self,
                ctx: &mut <Self::Target as #krate::TargetSystem>::Context,
            ) -> impl ::core::future::Future<Output = #krate::ChangeResult> + Send {
                #r(ctx)
            }
        }
    });
    let check = args.check.as_ref().map(|c| {
        quote! {
            fn is_applied(
                &self,
                ctx: &mut <Self::Target as #krate::TargetSystem>::Context,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<bool, #krate::BoxError>>
                   + Send {
                #c(ctx)
            }
        }
    });
    let doc = format!(
        "The change `{}` (order `{}`), declared with `#[change]` on an async function.",
        id.value(),
        order.value()
    );
    let register = args.stage.as_ref().map(|stage| {
        quote! {
            #krate::discovery::inventory::submit! {
                #krate::discovery::Registration::new(
                    #stage,
                    ::core::module_path!(),
                    |s: &mut #krate::Stage| {
                        s.add(#name);
                    },
                )
            }
        }
    });
    Ok(quote! {
        #register

        #(#attrs)*
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        impl #name {
            #inner
        }

        impl #krate::Change for #name {
            type Target = #target_ty;
            fn meta(&self) -> #krate::ChangeMeta {
                #meta
            }
            fn apply(
                &self,
                ctx: &mut <Self::Target as #krate::TargetSystem>::Context,
            ) -> impl ::core::future::Future<Output = #krate::ChangeResult> + Send {
                #name::#body_fn(ctx)
            }
            #rollback
            #check
        }
    })
}
