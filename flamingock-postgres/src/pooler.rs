//! The `pooler=` option of a store URL: whether a connection pooler in
//! transaction mode sits in front of the server.

/// Splits `pooler=transaction|session|none` off `url`'s query; returns the
/// URL for the driver and whether the pooler is in transaction mode.
///
/// ```ignore
/// assert_eq!(split_url("postgres://h/db?pooler=transaction&sslmode=require")?,
///            ("postgres://h/db?sslmode=require".into(), true));
/// ```
pub(crate) fn split_url(url: &str) -> Result<(String, bool), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), false));
    };
    let mut pooler = false;
    let mut keep = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("pooler", mode)) => {
                pooler = parse_mode(mode)?;
            }
            _ => keep.push(pair),
        }
    }
    let url = if keep.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", keep.join("&"))
    };
    Ok((url, pooler))
}

/// `transaction` → true; `session` and `none` → false.
pub(crate) fn parse_mode(mode: &str) -> Result<bool, String> {
    match mode {
        "transaction" => Ok(true),
        "session" | "none" => Ok(false),
        other => Err(format!(
            "pooler={other}: expected transaction (PgBouncer's pool_mode = transaction), session or none"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn the_pooler_option_is_ours_and_the_rest_goes_to_the_driver() {
        assert_eq!(
            split_url("postgres://h/db?pooler=transaction&sslmode=require"),
            Ok(("postgres://h/db?sslmode=require".into(), true))
        );
        assert_eq!(
            split_url("postgres://h/db?pooler=session"),
            Ok(("postgres://h/db".into(), false))
        );
        assert_eq!(
            split_url("postgres://h/db"),
            Ok(("postgres://h/db".into(), false))
        );
        assert!(matches!(
            split_url("postgres://h/db?pooler=statement"),
            Err(e) if e.contains("expected transaction")
        ));
    }
}
