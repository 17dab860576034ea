//! What a RabbitMQ change receives.

use std::sync::Arc;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::error::RabbitError;
use crate::spec::{ExchangeKind, QueueSpec};

/// A change's view of the broker: a channel for anything lapin can do
/// ([`channel`](Self::channel)), and helpers that declare idempotently and
/// check what is in place.
///
/// A declaration the broker refuses closes the AMQP channel it was sent on,
/// so each helper that may be refused, or that only looks, runs on a
/// short-lived channel of its own, and a refused one leaves the change's
/// channel usable.
pub struct RabbitContext {
    conn: Arc<Connection>,
    channel: Channel,
}

impl std::fmt::Debug for RabbitContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitContext").finish_non_exhaustive()
    }
}

/// Whether the broker's reply code says "exists with other settings" (406).
fn precondition_failed(e: &lapin::Error) -> bool {
    e.to_string().contains("PRECONDITION_FAILED")
}

/// Whether the broker's reply code says "no such object" (404).
fn not_found(e: &lapin::Error) -> bool {
    e.to_string().contains("NOT_FOUND")
}

impl RabbitContext {
    pub(crate) fn new(conn: Arc<Connection>, channel: Channel) -> Self {
        RabbitContext { conn, channel }
    }

    pub(crate) async fn close(self) {
        if self.channel.status().connected() {
            let _ = self.channel.close(200, "done".into()).await;
        }
    }

    /// The change's channel, for anything the helpers do not cover.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    async fn scratch(&self, operation: &str) -> Result<Channel, RabbitError> {
        self.conn
            .create_channel()
            .await
            .map_err(|source| RabbitError::Broker {
                operation: format!("open a channel to {operation}"),
                source,
            })
    }

    async fn done(ch: Channel) {
        if ch.status().connected() {
            let _ = ch.close(200, "done".into()).await;
        }
    }

    /// Declares an exchange (durable) of `kind`: nothing happens when it
    /// exists as asked; [`RabbitError::Mismatch`] when it exists as another
    /// kind or durability.
    pub async fn declare_exchange(
        &mut self,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), RabbitError> {
        let op = format!("declare exchange '{name}'");
        let ch = self.scratch(&op).await?;
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let out = ch
            .exchange_declare(name.into(), kind.lapin(), options, FieldTable::default())
            .await;
        Self::done(ch).await;
        out.map_err(|source| match precondition_failed(&source) {
            true => RabbitError::Mismatch {
                what: format!("exchange '{name}'"),
                asked: format!("{}, durable", kind.as_str()),
                broker: source.to_string(),
            },
            false => RabbitError::Broker {
                operation: op,
                source,
            },
        })
    }

    /// Declares a queue: nothing happens when it exists with the same
    /// durability and arguments; [`RabbitError::Mismatch`] naming the queue,
    /// the arguments asked for and the broker's reply (which names the
    /// argument that differs and its current value) when it exists otherwise.
    pub async fn declare_queue(&mut self, spec: &QueueSpec) -> Result<(), RabbitError> {
        let op = format!("declare queue '{}'", spec.name);
        let ch = self.scratch(&op).await?;
        let options = QueueDeclareOptions {
            durable: spec.durable,
            ..QueueDeclareOptions::default()
        };
        let out = ch
            .queue_declare(spec.name.as_str().into(), options, spec.table())
            .await;
        Self::done(ch).await;
        out.map(|_| ())
            .map_err(|source| match precondition_failed(&source) {
                true => RabbitError::Mismatch {
                    what: format!("queue '{}'", spec.name),
                    asked: spec.describe(),
                    broker: source.to_string(),
                },
                false => RabbitError::Broker {
                    operation: op,
                    source,
                },
            })
    }

    /// Binds `queue` to `exchange` with `routing_key` (binding twice is a no-op).
    pub async fn bind_queue(
        &mut self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), RabbitError> {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| RabbitError::Broker {
                operation: format!("bind queue '{queue}' to exchange '{exchange}' ({routing_key})"),
                source,
            })
    }

    /// Deletes a queue (and its messages); nothing happens when it does not exist.
    pub async fn delete_queue(&mut self, name: &str) -> Result<(), RabbitError> {
        self.channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .map(|_| ())
            .map_err(|source| RabbitError::Broker {
                operation: format!("delete queue '{name}'"),
                source,
            })
    }

    /// Deletes an exchange; nothing happens when it does not exist.
    pub async fn delete_exchange(&mut self, name: &str) -> Result<(), RabbitError> {
        self.channel
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await
            .map_err(|source| RabbitError::Broker {
                operation: format!("delete exchange '{name}'"),
                source,
            })
    }

    /// Whether a queue named `name` exists (a passive declaration: only looks).
    pub async fn queue_exists(&mut self, name: &str) -> Result<bool, RabbitError> {
        let op = format!("look for queue '{name}'");
        let ch = self.scratch(&op).await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let out = ch
            .queue_declare(name.into(), options, FieldTable::default())
            .await;
        Self::done(ch).await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(source) => Err(RabbitError::Broker {
                operation: op,
                source,
            }),
        }
    }

    /// Whether an exchange named `name` exists (a passive declaration: only looks).
    pub async fn exchange_exists(&mut self, name: &str) -> Result<bool, RabbitError> {
        let op = format!("look for exchange '{name}'");
        let ch = self.scratch(&op).await?;
        let options = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let out = ch
            .exchange_declare(
                name.into(),
                lapin::ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await;
        Self::done(ch).await;
        match out {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(source) => Err(RabbitError::Broker {
                operation: op,
                source,
            }),
        }
    }
}
