//! Driver errors with a sentence saying what to do, where the driver's own
//! text does not (TLS refusals arrive as a server selection timeout whose
//! last words are rustls' verdict).

use flamingock_core::tls::TlsRefusal;
use flamingock_core::BoxError;
use mongodb::error::{Error as DriverError, ErrorKind};

/// A driver error with advice in front of it.
#[derive(Debug, thiserror::Error)]
#[error("{advice}")]
pub(crate) struct Explained {
    advice: String,
    #[source]
    source: DriverError,
}

/// `e` as the source of one of this crate's errors: with advice when the
/// connection was refused by TLS, else as it is.
pub(crate) fn boxed(e: DriverError) -> BoxError {
    let text = e.to_string();
    if let Some(refusal) = TlsRefusal::recognise(&text) {
        return Box::new(Explained {
            advice: format!("TLS: {}: {}", refusal.what(), remedy(refusal)),
            source: e,
        });
    }
    // A server selection that timed out without any server reporting an
    // error (nothing answered), or with the connection reset by the server:
    // what a TLS client gets from a server without TLS, and a plain client
    // from a TLS server.
    if matches!(*e.kind, ErrorKind::ServerSelection { .. })
        && (!text.contains("Error:") || text.contains("Connection reset by peer"))
    {
        return Box::new(Explained {
            advice: "no server completed the handshake: check the host and port, and that \
                     tls=true is in the connection string exactly when the server uses TLS \
                     (a server without TLS does not answer a TLS client, nor a TLS server a \
                     plain one)"
                .to_owned(),
            source: e,
        });
    }
    Box::new(e)
}

fn remedy(refusal: TlsRefusal) -> &'static str {
    match refusal {
        TlsRefusal::UnknownAuthority => {
            "give the CA that signed it with tlsCAFile=PATH in the connection string"
        }
        TlsRefusal::NameMismatch => {
            "connect by a host name the certificate lists (or, for tests only, \
             tlsAllowInvalidHostnames=true)"
        }
        TlsRefusal::NotTls => {
            "leave tls=true out of the connection string for a server without TLS"
        }
        _ => "check the connection string's TLS options",
    }
}
