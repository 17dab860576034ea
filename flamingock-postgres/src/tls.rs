//! The rustls crypto provider TLS connections need.

/// Installs ring's rustls crypto provider as the process default, unless one
/// is installed already. The store, lock and target builders call it; call
/// it yourself before connecting a pool of your own with
/// `sslmode=verify-ca`.
///
/// sqlx picks ring for its own TLS configuration, but its `verify-ca` path
/// asks rustls for the process default, which rustls cannot choose when a
/// build enables more than one provider (the AWS SDK brings aws-lc-rs):
/// without a default, that connection panics. Idempotent and cheap.
///
/// ```
/// flamingock_postgres::install_tls_provider();
/// ```
/// Without the `tls` feature there is no TLS to set up: it does nothing.
pub fn install_tls_provider() {
    #[cfg(feature = "tls")]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have won the race: that provider stays.
        // ring on purpose (what sqlx uses); newer rustls marks it deprecated for
        // lacking post-quantum key exchange.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
