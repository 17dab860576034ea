//! What the server can do, from its `hello` reply.

use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;

/// Whether a deployment runs multi-document transactions, read from `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transactions {
    /// A replica-set member or a `mongos`, with sessions.
    Available,
    /// A standalone server (or one without sessions): why, and what to do.
    Unavailable(String),
}

/// The advice every "no transactions" message ends with.
pub(crate) const ADVICE: &str = "run MongoDB as a replica set (a single-node replica set is \
enough: start mongod with --replSet rs0 and run rs.initiate() once), or declare every change of \
this target .transactional(false)";

/// Asks the server (`hello`, falling back to the legacy `isMaster`).
pub(crate) async fn detect(client: &Client) -> Result<Transactions, mongodb::error::Error> {
    let admin = client.database("admin");
    let reply = match admin.run_command(doc! { "hello": 1 }).await {
        Ok(r) => r,
        // Servers older than 4.4 (code 59: CommandNotFound) only know isMaster.
        Err(e) if crate::codec::error_code(&e) == Some(59) => {
            admin.run_command(doc! { "isMaster": 1 }).await?
        }
        Err(e) => return Err(e),
    };
    Ok(classify(&reply))
}

/// The decision, separated from I/O so it can be unit-tested.
pub(crate) fn classify(hello: &Document) -> Transactions {
    let replica_set = matches!(hello.get("setName"), Some(Bson::String(_)));
    let mongos = hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
    let sessions = matches!(
        hello.get("logicalSessionTimeoutMinutes"),
        Some(Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
    );
    if !sessions {
        return Transactions::Unavailable(format!(
            "the MongoDB server does not support sessions (its hello reply has no \
             logicalSessionTimeoutMinutes), so it cannot run transactions: {ADVICE}"
        ));
    }
    if !replica_set && !mongos {
        return Transactions::Unavailable(format!(
            "the MongoDB server is a standalone mongod (its hello reply has no setName), and \
             MongoDB runs multi-document transactions only on replica sets and sharded \
             clusters: {ADVICE}"
        ));
    }
    Transactions::Available
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hello_replies() {
        let rs =
            doc! {"isWritablePrimary": true, "setName": "rs0", "logicalSessionTimeoutMinutes": 30};
        assert_eq!(classify(&rs), Transactions::Available);
        let mongos = doc! {"msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30};
        assert_eq!(classify(&mongos), Transactions::Available);
        let standalone = doc! {"isWritablePrimary": true, "logicalSessionTimeoutMinutes": 30};
        assert!(
            matches!(classify(&standalone), Transactions::Unavailable(m) if m.contains("standalone"))
        );
        let no_sessions = doc! {"setName": "rs0"};
        assert!(
            matches!(classify(&no_sessions), Transactions::Unavailable(m) if m.contains("sessions"))
        );
    }
}
