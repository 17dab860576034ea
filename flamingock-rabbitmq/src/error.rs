//! What a RabbitMQ helper can fail with.

/// An error of [`RabbitContext`](crate::RabbitContext)'s helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// The broker already has the object with other settings; nothing was
    /// redeclared.
    #[error("{what} exists on the broker with other settings; asked for {asked}; the broker says: {broker}. Nothing was changed: declare it as it is, or delete it first in a change of its own")]
    Mismatch {
        /// The object, e.g. `queue 'orders'`.
        what: String,
        /// The settings and arguments asked for.
        asked: String,
        /// The broker's reply (names the setting that differs and both values).
        broker: String,
    },
    /// The broker refused or failed an operation.
    #[error("{operation} failed")]
    Broker {
        /// What was being done, e.g. `declare queue 'orders'`.
        operation: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
}
