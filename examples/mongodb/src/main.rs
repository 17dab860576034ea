//! Flamingock on MongoDB: schema (validator + index), seed data, migrations.
#![allow(clippy::print_stdout)] // an example prints its results

use flamingock::mongodb::mongodb::bson::{doc, Document};
use flamingock::mongodb::mongodb::options::IndexOptions;
use flamingock::mongodb::mongodb::{Client, IndexModel};
use flamingock::mongodb::{MongoAuditStore, MongoContext, MongoTarget};
use flamingock::{Change, ChangeMeta, ChangeResult, Error, Flamingock, Stage};
use futures::TryStreamExt;

const DB: &str = "flamingock_example";

/// Collection options and index builds cannot run inside a transaction.
struct CreateCustomers;
impl Change for CreateCustomers {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-customers")
            .order("0001")
            .author("ana")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
        let (db, session) = ctx.split();
        db.create_collection("customers")
            .validator(doc! { "$jsonSchema": {
                "bsonType": "object",
                "required": ["email"],
                "properties": { "email": { "bsonType": "string" } },
            } })
            .session(session)
            .await?;
        ctx.db()
            .collection::<Document>("customers")
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .session(ctx.session())
            .await?;
        Ok(())
    }
}

struct SeedCustomers;
impl Change for SeedCustomers {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("seed-customers")
            .order("0002")
            .author("ana")
    }
    async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
        ctx.db()
            .collection::<Document>("customers")
            .insert_many([
                doc! { "_id": 1, "name": "Ana Pérez", "email": "Ana@Example.com" },
                doc! { "_id": 2, "name": "Bo Li", "email": "BO@example.com" },
                doc! { "_id": 3, "name": "Bo Li", "email": "bo@example.com" },
            ])
            .session(ctx.session())
            .await?;
        Ok(())
    }
}

/// `name` → `first` + `last`. The rollback undoes it when the change runs
/// without a transaction; in a transaction the database undoes a failure.
struct SplitNames;
impl Change for SplitNames {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("split-names").order("0003").author("ana")
    }
    async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
        ctx.db()
            .collection::<Document>("customers")
            .update_many(
                doc! { "name": { "$type": "string" } },
                vec![
                    doc! { "$set": {
                        "first": { "$arrayElemAt": [ { "$split": ["$name", " "] }, 0 ] },
                        "last": { "$arrayElemAt": [ { "$split": ["$name", " "] }, 1 ] },
                    } },
                    doc! { "$unset": "name" },
                ],
            )
            .session(ctx.session())
            .await?;
        Ok(())
    }
    async fn rollback(&self, ctx: &mut MongoContext) -> ChangeResult {
        ctx.db()
            .collection::<Document>("customers")
            .update_many(
                doc! { "first": { "$exists": true } },
                vec![
                    doc! { "$set": { "name": { "$concat": ["$first", " ", "$last"] } } },
                    doc! { "$unset": ["first", "last"] },
                ],
            )
            .session(ctx.session())
            .await?;
        Ok(())
    }
}

/// Lower-cases every email. The first version forgets that two customers
/// differ only by case: the unique index rejects the second update and the
/// whole transaction (including the first update) is rolled back.
struct LowercaseEmails {
    merge_duplicates: bool,
}
impl Change for LowercaseEmails {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("lowercase-emails")
            .order("0004")
            .author("bo")
    }
    async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
        let customers = ctx.db().collection::<Document>("customers");
        let all: Vec<Document> = customers
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .session(&mut *ctx.session())
            .await?
            .stream(ctx.session())
            .try_collect()
            .await?;
        let mut seen = std::collections::HashSet::new();
        let mut updates = Vec::new();
        for c in all {
            let id = c.get_i32("_id")?;
            let email = c.get_str("email")?.to_lowercase();
            if !seen.insert(email.clone()) && self.merge_duplicates {
                // The fixed version keeps the oldest customer of each email.
                customers
                    .delete_one(doc! { "_id": id })
                    .session(ctx.session())
                    .await?;
            } else {
                updates.push((id, email));
            }
        }
        for (id, email) in updates {
            customers
                .update_one(doc! { "_id": id }, doc! { "$set": { "email": email } })
                .session(ctx.session())
                .await?;
        }
        Ok(())
    }
}

fn stages(fixed: bool) -> Stage {
    Stage::new("customers")
        .change(CreateCustomers)
        .change(SeedCustomers)
        .change(SplitNames)
        .change(LowercaseEmails {
            merge_duplicates: fixed,
        })
}

async fn print_customers(client: &Client) -> Result<(), Box<dyn std::error::Error>> {
    let docs: Vec<Document> = client
        .database(DB)
        .collection::<Document>("customers")
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    for d in docs {
        println!("    {d}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("MONGODB_URL")
        .map_err(|_| "set MONGODB_URL, e.g. mongodb://127.0.0.1:27017/?directConnection=true")?;
    let client = Client::with_uri_str(&url).await?;
    client.database(DB).drop().await?;
    let store = MongoAuditStore::builder(client.clone(), DB).build().await?;
    let target = store.shared_target("customers-db").build().await?;

    let runner = |fixed| {
        Flamingock::builder()
            .service("example-mongodb")
            .audit_store(store.clone())
            .target(target.clone())
            .stage(stages(fixed))
            .build()
    };

    println!("first run (lowercase-emails has a bug):");
    match runner(false)?.run().await {
        Err(Error::ChangeFailed { failure, report }) => {
            println!("{report}");
            println!("  failed as expected: {failure}");
            println!("  the transaction rolled it back; customers are as split-names left them:");
            print_customers(&client).await?;
        }
        other => return Err(format!("expected the buggy migration to fail, got {other:?}").into()),
    }

    println!("second run (fixed migration):");
    let report = runner(true)?.run().await?;
    println!("{report}");
    print_customers(&client).await?;

    println!("third run (nothing pending, no lock taken):");
    let report = runner(true)?.run().await?;
    println!("{report}");
    Ok(())
}
